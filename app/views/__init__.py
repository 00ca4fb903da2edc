"""The app's pages and the modules they read the run through.

Pages, each ``render(state, window)``: :mod:`.overview`, :mod:`.browse`, :mod:`.simple`,
:mod:`.detection`, :mod:`.relabel_queue`, :mod:`.audit`; pieces they share: :mod:`.widgets`
(sample detail, relabel buttons, pagers, the flag-rule choice), :mod:`.grid` (the Browse image
grid) and :mod:`.charts`.

Reading the run: :mod:`.state` (:class:`~.state.RunState`, relabel decisions, the audit's
state), :mod:`.jobs` (summaries and images, loaded once per process in the background),
:mod:`.results` (the cached ``Analysis``: ranking, flags, epoch selection, detection tables,
stopping notes, the review's recall), :mod:`.table` (the Browse table: the analysis's order
and flags, filters, pages), :mod:`.samples` (recorded per-epoch rows) and :mod:`.images` (the
dataset, thumbnails).

Presentation only: every number comes from the analysis layer; these modules select,
filter, page and draw, and never score, rank, flag or select an epoch again. Of gwa_diag,
the app and its views import the analysis layer, the input checks, the run store and the
dataset loaders (to show the images), never the training loop or the CLI; their own
modules are always allowed.

May import: gwa_diag.analysis, gwa_diag.checks, gwa_diag.store, gwa_diag.training.data.
"""
