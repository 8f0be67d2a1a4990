"""Everything beyond the course's algorithm, in folders by concern.

The course's EM (loading a scan, the E-steps, the M-step, the EM loop, the scores against the
true labels) is ``em_helpers``, the module beside this package. Dependencies run one way, top
to bottom of this map: a folder imports only from the folders below it and from
``em_helpers``; ``em_helpers`` imports only the engine; the engine imports nothing above it.
``tests/test_layout.py`` holds these rules.

=================================  ===========================================================
module                             what it holds
=================================  ===========================================================
**command line**
``emlab.cli.segment``              ``emlab-segment``: segment a NIfTI scan, write labels + CSV
**report** (used by notebooks, scripts and tests only)
``emlab.report.tables``            the simulation notebooks' tables (``parameter_table``, ...)
``emlab.report.plotting``          the figures' helpers (``plot_clusters``, ...)
``emlab.report.animation``         EM runs as animations from their history
``emlab.report.comparison``        several segmenters side by side, with wall times
**imaging**
``emlab.imaging.segmentation``     tissue segmentation, optional Potts prior (``segment_image``)
``emlab.imaging.lesions``          lesions as voxels no tissue explains (``find_lesions``)
``emlab.imaging.dask_volumes``     ``segment_image`` without a prior on a dask volume
``emlab.imaging.potts``            the Potts prior's neighbours, colour sets, sweeps, objectives
``emlab.imaging.bias_field``       a smooth multiplicative bias field estimated inside EM
``emlab.imaging.partial_volume``   partial-volume tissue fractions (pure and mixed classes)
``emlab.imaging.label_maps``       Dice, matching, per-class statistics of label images
``emlab.imaging.phantoms``         implanted lesions, noise, BrainWeb-style scans, with a truth
``emlab.imaging.mni152``           the MNI152 template and its tissue maps (from nilearn)
``emlab.imaging.dipy_hmrf``        dipy's HMRF classifier behind the same interface
``emlab.imaging.nifti``            NIfTI files in and out, the affine, volumes in mL
**models**
``emlab.models.estimators``        scikit-learn estimators: ``MixtureEM``, ``EMImputer``
``emlab.models.course_scans``      the course's two scans: loading, truth, hard and soft fits
``emlab.models.model_selection``   BIC, AIC and ICL; choosing the number of components
``emlab.models.categorical``       the categorical mixture of theory question 5
``emlab.models.bootstrap``         standard errors by a stratified bootstrap
``emlab.models.imputation``        filling in missing cells (``impute``, ``compare_imputers``)
**engine** (what ``em_helpers`` runs on)
``emlab.engine.loop``              the one EM loop: convergence, history, progress, best start
``emlab.engine.chunked``           ``run_em`` on a dask array, one pass over its chunks
``emlab.engine.fastpath``          the blocked complete-data passes of ``run_em``
``emlab.engine.covariance``        the four covariance models of the M-step
``emlab.engine.scaling``           the standardised units ``run_em`` fits in
``emlab.engine.validation``        input checks shared by all of the above
=================================  ===========================================================

This file and the folders' ``__init__`` files import nothing, so that ``import em_helpers``
never runs into a module that needs ``em_helpers`` back.
"""
