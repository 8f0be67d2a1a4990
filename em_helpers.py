"""EM for mixture models: the helper module of this project.

Read top to bottom, it follows the course's order:

1. loading the data (``load_image``)
2. the E-step (``e_step``: hard assignment by Euclidean distance)
3. the M-step (``m_step``: means, covariances, weights; missing cells handled)
4. the EM loop (``run_em``, ``EMResult``)
5. metrics against the true labels
6. plotting helpers shared by the notebooks
"""
