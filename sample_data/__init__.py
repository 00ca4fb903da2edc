"""The bundled CIFAR-10-N subset (installed as ``gwa_diag.sample_data``): see README.md
beside this file for what it holds, where it comes from and its licences."""
