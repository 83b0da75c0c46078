"""The CG-STVG model: backbones, multimodal encoder, decoders with ICG/ICR, heads, criterion, post-processing.

Entry points: `cgstvg.CGSTVG` / `build_cgstvg` (full model), `head.CGSTVGHead` (grounding head on backbone
features), `config.CGSTVGConfig` (every head switch), `criterion.CGSTVGCriterion`, `postprocess.post_process`,
`convert.convert_official_state_dict` (the authors' checkpoints), `targets.GroundingTargets`.
"""
