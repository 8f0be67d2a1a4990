"""Everything beyond the course's algorithm, one module per concern.

The course's EM (loading a scan, the E-steps, the M-step, the EM loop, the scores against the
true labels) is ``em_helpers``, the module beside this package. The application modules (the
first part of the table) use it; it uses only the support modules of the second part, which
import nothing of ours but each other. Dependencies run one way, top to bottom:

=========================  ===================================================================
module                     what it holds
=========================  ===================================================================
``emlab.segment``          the command that segments a user's NIfTI scan (``python -m ...``)
``emlab.model_selection``  BIC, AIC and ICL; choosing the number of components and the model
``emlab.cmm``              the categorical mixture of theory question 5 (``run_cmm_em``)
``emlab.tables``           tables for the simulation notebooks 01-05 (``parameter_table``, ...)
``emlab.bootstrap``        standard errors by a stratified bootstrap (``bootstrap_parameters``)
``emlab.imputation``       filling in missing cells (``impute``, ``compare_imputers``)
``emlab.comparison``       several segmenters side by side, with wall times (notebook 08)
``emlab.segmentation``     tissue segmentation with an optional Potts prior (``segment_image``)
``emlab.dask_volumes``     ``segment_image`` without a prior on a dask volume, chunk by chunk
``emlab.potts``            the Potts prior's neighbours, colour sets, sweeps and objectives
``emlab.label_maps``       Dice, matching, per-class statistics of label images, cropping
``emlab.phantoms``         an implanted lesion and added noise, for checks with a known truth
``emlab.templates``        the MNI152 template and its reference tissue maps (from nilearn)
``emlab.dipy_hmrf``        dipy's HMRF classifier behind the same interface
``emlab.nifti``            NIfTI files in and out, the voxel-to-world affine (volumes in mL)
``emlab.animation``        EM runs as animations from their history (``em_animation_html``)
``emlab.plotting``         the figures' helpers (``plot_clusters``, ``plot_label_image``, ...)
-------------------------  -------------------------------------------------------------------
``emlab.distributed``      ``run_em`` on a dask array, one pass over its chunks per iteration
``emlab.fastpath``         the blocked complete-data path of ``run_em`` (used by ``em_helpers``)
``emlab.covariance``       the four covariance models of the M-step (used by ``em_helpers``)
``emlab.units``            the standardised units ``run_em`` fits in (used by ``em_helpers``)
``emlab.validation``       input checks shared by all of the above (imports nothing of ours)
=========================  ===================================================================

This file imports nothing, so that ``import em_helpers`` (which needs ``emlab.validation``,
``emlab.covariance``, ``emlab.fastpath``, ``emlab.units`` and ``emlab.distributed``) never runs
into a module that needs ``em_helpers`` back.
"""
