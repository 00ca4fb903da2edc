"""Datasets that yield ``(image, label, sample_id)`` with stable sample ids, one module per
source: :mod:`.base` (the :class:`SampleDataset` contract), :mod:`.arrays` (in-memory arrays,
``.npz`` files, CIFAR-10 through torchvision), :mod:`.sample` (the bundled CIFAR-10-N
subset), :mod:`.folders` (one sub-folder per class), :mod:`.manifest` (a CSV listing
image files with their labels), :mod:`.evaluation` (evaluation sets given apart), :mod:`.labels` (user label files and
label arrays joined by sample id), :mod:`.cifar10n` (CIFAR-10-N label sets), :mod:`.noise`
(synthetic noise), :mod:`.exclude` (samples left out by an exclusion file) and :mod:`.spec`
(:func:`load_dataset` rebuilds any of them, labels, noise and exclusions included, from the
``spec`` saved in ``run.json``). Sample ids are the dataset's own indices (for CIFAR-10 the
training index), so external ground truth joins on them and the app finds each image again.
These modules import numpy and torch and, of gwa_diag, the input checks and the store:
:mod:`.exclude` records the exclusion file a run left out by its
:func:`gwa_diag.store.file_sha256`, the project's one SHA-256 helper (a copy here could
drift from the hashes run.json records elsewhere). Nothing of the training loop, so the app
can rebuild a run's dataset. This file re-exports their public names.

May import: gwa_diag.checks, gwa_diag.store.
"""

from gwa_diag.training.data.arrays import CIFAR10_CLASSES, ArrayDataset, cifar10, load_npz
from gwa_diag.training.data.base import SampleDataset
from gwa_diag.training.data.cifar10n import CIFAR10N_LABEL_SETS, cifar10n_labels, load_cifar10n, with_cifar10n
from gwa_diag.training.data.evaluation import load_eval_set
from gwa_diag.training.data.exclude import SampleSubset, load_exclusion_file, without_samples
from gwa_diag.training.data.folders import IMAGE_EXTENSIONS, ImageFolderDataset
from gwa_diag.training.data.hf import HFImageDataset
from gwa_diag.training.data.labels import load_label_file, with_label_file, with_label_set
from gwa_diag.training.data.manifest import ManifestDataset, load_manifest
from gwa_diag.training.data.noise import NOISE_KINDS, inject_noise, with_noise
from gwa_diag.training.data.sample import sample_data, sample_data_path
from gwa_diag.training.data.spec import data_fingerprint, load_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10N_LABEL_SETS",
    "IMAGE_EXTENSIONS",
    "NOISE_KINDS",
    "ArrayDataset",
    "HFImageDataset",
    "ImageFolderDataset",
    "ManifestDataset",
    "SampleDataset",
    "SampleSubset",
    "cifar10",
    "cifar10n_labels",
    "data_fingerprint",
    "inject_noise",
    "load_cifar10n",
    "load_dataset",
    "load_eval_set",
    "load_exclusion_file",
    "load_label_file",
    "load_manifest",
    "load_npz",
    "sample_data",
    "sample_data_path",
    "with_cifar10n",
    "with_label_file",
    "with_label_set",
    "with_noise",
    "without_samples",
]
