"""The unified evaluator of refinemask-bench. It never imports a model.

Entry points:

- :class:`eval.evaluator.InstanceSegEvaluator` — streaming evaluator (``reset`` / ``process`` / ``evaluate``)
  over the metric groups ``coco``, ``ap_star``, ``lvis``, ``boundary_f``, ``boundary_acc``, ``boundary_ap``,
  ``cityscapes``;
- :mod:`eval.io` — reading and validating ground truth and results (:class:`eval.io.EvalInputError`);
- :mod:`eval.output` — metrics.json (fractions + provenance), markdown and CSV writers;
- the metrics themselves: :mod:`eval.coco`, :mod:`eval.lvis_ap`, :mod:`eval.boundary_f`,
  :mod:`eval.boundary_acc`, :mod:`eval.cityscapes`; the boundary-region maths in :mod:`eval.boundary`;
  studies: :mod:`eval.region_study` (paper Table 12), :mod:`eval.ceiling` (mask-resolution ceiling);
- :mod:`eval.benchmark` — timing of the whole suite against pycocotools.

Every value is a fraction in [0, 1]; ×100 appears only in rendered tables.
"""
