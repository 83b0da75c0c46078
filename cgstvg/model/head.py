"""The CG-STVG grounding head: everything between the three backbones and the predictions.

Input projections -> multimodal encoder -> anchor initialisation -> K decoding stages, each a temporal block (TDB)
and a spatial block (SDB) followed by ICG + ICR, whose context guides the next stage's SDB (and TDB with
`context_in_temporal`). Heads: boxes from every SDB output, start/end and actioness logits from every TDB output.

Batch layout (batch-first everywhere): B videos, padded to T frames (`time_mask`), H' x W' feature cells per frame,
L text tokens (`text_mask`). Inference needs no ground truth; `targets` are read only by the 'gt_giou' training
selection of ICR (pass them in training, never at evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.context import InstanceContextGeneration, InstanceContextRefinement
from cgstvg.model.encoder import MultimodalEncoder
from cgstvg.model.heads import MLP, AnchorInit, FeatureResizer
from cgstvg.model.position_encoding import sine_box_embedding, sine_position_2d, sine_time_table
from cgstvg.model.spatial_decoder import SpatialDecoder
from cgstvg.model.targets import GroundingTargets
from cgstvg.model.temporal_decoder import TemporalDecoder


@dataclass
class StageOutput:
    """Predictions of one decoding stage.

    pred_boxes (B, T, 4) normalised (cx, cy, w, h); boxes_conf (B, T) = sigmoid(conf_a) + sigmoid(conf_m) in [0, 2]
    (None when context_mode == 'none'); pred_sted (B, T, 2) start ([..., 0]) and end logits; pred_actioness (B, T)
    logits.
    """

    pred_boxes: Tensor
    boxes_conf: Tensor | None
    pred_sted: Tensor
    pred_actioness: Tensor


@dataclass
class CGSTVGOutput(StageOutput):
    """The last stage's predictions plus the earlier stages (`aux_outputs`, stage 0 first).

    time_mask (B, T) True = padded frame; selected_frames: one (B, T) bool per stage, the frames whose context the
    next stage receives; intermediates: named internal tensors when the forward was asked for them (tests).
    """

    time_mask: Tensor
    aux_outputs: list[StageOutput] = field(default_factory=list)
    selected_frames: list[Tensor] = field(default_factory=list)
    intermediates: dict[str, Tensor] | None = None

    @property
    def stages(self) -> list[StageOutput]:
        """Every stage, the last one included (the order of the criterion's suffixes _0, _1, ..., none)."""
        last = StageOutput(self.pred_boxes, self.boxes_conf, self.pred_sted, self.pred_actioness)
        return [*self.aux_outputs, last]


class CGSTVGHead(nn.Module):
    """Grounding head; parameter names are ours (`cgstvg.model.convert` maps the release's)."""

    time_table: Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, cfg: CGSTVGConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.input_proj = nn.Conv2d(cfg.appearance_dim, d, kernel_size=1)
        self.motion_proj = nn.Conv2d(cfg.motion_dim, d, kernel_size=1)
        self.text_resizer = FeatureResizer(cfg.text_dim, d, cfg.dropout)
        self.encoder = MultimodalEncoder(d, cfg.heads, cfg.ffn_dim, cfg.enc_layers, cfg.dropout)
        self.anchor_init = AnchorInit(d, cfg.dropout)
        self.temporal_decoder = TemporalDecoder(
            d,
            cfg.heads,
            cfg.ffn_dim,
            cfg.dec_layers,
            cfg.dropout,
            cfg.context_heads,
            cfg.context_ffn_dim,
            cfg.context_in_temporal,
        )
        self.spatial_decoder = SpatialDecoder(
            d,
            cfg.heads,
            cfg.ffn_dim,
            cfg.dec_layers,
            cfg.dropout,
            cfg.context_heads,
            cfg.context_ffn_dim,
            cfg.uses_context,
        )
        self.icg = InstanceContextGeneration(cfg) if cfg.uses_context else None
        self.icr = InstanceContextRefinement(cfg) if cfg.uses_context else None
        self.box_head = MLP(d, d, 4, 3)
        if cfg.query_init == "text":
            self.spatial_query_init = nn.Linear(d, d)
            self.temporal_query_init = nn.Linear(d, d)
        self.sted_head = MLP(d, d, 2, 2, cfg.head_dropout, cfg.dropout_on_logits)
        self.actioness_head = MLP(d, d, 1, 2, cfg.head_dropout, cfg.dropout_on_logits)
        # Saved in checkpoints as the release saves it: a converted release checkpoint brings the table its
        # authors' machine computed (equal to ours to float32 rounding, see cgstvg.model.convert).
        self.register_buffer("time_table", sine_time_table(cfg.max_video_len + 1, d))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Xavier-uniform for every matrix of the transformer parts, as the release initialises them."""
        for module in (self.encoder, self.anchor_init, self.temporal_decoder, self.spatial_decoder, self.icr):
            if module is None:
                continue
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(
        self,
        vis_feat: Tensor,
        vis_mask: Tensor,
        motion_feat: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        time_mask: Tensor | None = None,
        targets: GroundingTargets | None = None,
        return_intermediates: bool = False,
    ) -> CGSTVGOutput:
        """
        Args:
            vis_feat: (B, T, C_a, H', W') appearance features (ResNet layer4).
            vis_mask: (B, T, H', W') bool, True = padded cell.
            motion_feat: (B, T, C_m, H', W') motion features (Video Swin stage 4).
            text_hidden: (B, L, C_t) text encoder output.
            text_mask: (B, L) bool, True = padding token.
            time_mask: (B, T) bool, True = padded frame; None = every frame is real.
            targets: GT for the 'gt_giou' training selection; leave None at inference.
            return_intermediates: also return internal tensors (`CGSTVGOutput.intermediates`).
        Returns:
            CGSTVGOutput (see its docstring).
        """
        cfg = self.cfg
        self._check_inputs(vis_feat, vis_mask, motion_feat, text_hidden, text_mask, time_mask)
        b, t, _, h, w = vis_feat.shape
        if t > self.time_table.shape[0]:
            raise ValueError(f"CGSTVGHead: {t} frames exceed max_video_len + 1 = {self.time_table.shape[0]}")
        if time_mask is None:
            time_mask = torch.zeros(b, t, dtype=torch.bool, device=vis_feat.device)
        rec: dict[str, Tensor] | None = {} if return_intermediates else None
        d, hw, n_text = cfg.d_model, h * w, text_hidden.shape[1]

        # Tokens per frame: [appearance H'W' ; text L ; motion H'W'] (the release's order), frames as the batch.
        cells = vis_mask.flatten(0, 1)  # (BT, H, W)
        vis_pos = sine_position_2d(cells, d).flatten(1, 2)  # (BT, HW, d)
        app = self.input_proj(vis_feat.flatten(0, 1))
        mot = self.motion_proj(motion_feat.flatten(0, 1))
        text = self.text_resizer(text_hidden)
        tokens = torch.cat(
            [
                app.flatten(2).transpose(1, 2),
                text[:, None].expand(b, t, n_text, d).flatten(0, 1),
                mot.flatten(2).transpose(1, 2),
            ],
            dim=1,
        )
        cell_mask = cells.flatten(1).clone()
        cell_mask[:, 0] = False  # release: the first cell is always attended, so no key set is empty
        text_pad = text_mask[:, None].expand(b, t, n_text).flatten(0, 1)
        key_mask = torch.cat([cell_mask, text_pad, cell_mask], dim=1)  # (BT, S)
        zeros_text = vis_pos.new_zeros(b * t, n_text, d)
        memory = self.encoder(tokens, torch.cat([vis_pos, zeros_text, vis_pos], dim=1), key_mask)
        # The decoders position only the appearance tokens (zero for text and motion, as the release).
        dec_pos = torch.cat([vis_pos, vis_pos.new_zeros(b * t, n_text + hw, d)], dim=1)

        if cfg.frames_cls_over_padding:
            frames_cls = memory.mean(dim=1)
        else:
            keep = (~key_mask).to(memory.dtype)
            frames_cls = (memory * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True)
        frames_cls = frames_cls.view(b, t, d)
        anchors = self.anchor_init(frames_cls).sigmoid()
        time_pos = self.time_table[:t]
        if rec is not None:
            rec.update(
                {
                    "vis_pos": vis_pos.unflatten(1, (h, w)),
                    "input_proj_out": app,
                    "motion_proj_out": mot,
                    "text_resized": text,
                    "enc.memory": memory,
                    "enc.key_padding_mask": key_mask,
                    "enc.frames_cls": frames_cls,
                    "enc.videos_cls": frames_cls.mean(dim=1),
                    "dec.init_anchors": anchors,
                    "dec.query_time_embed": time_pos,
                }
            )

        if cfg.query_init == "text":
            tgt_s0, tgt_t0 = self._text_queries(memory, hw, n_text, text_pad, time_mask)
        else:
            tgt_s0 = tgt_t0 = vis_feat.new_zeros(b, t, d)

        memory_key = memory + dec_pos
        visible = ~key_mask if cfg.spatial_key_padding_mask else None
        temporal = self.temporal_decoder
        spatial = self.spatial_decoder
        num_stages = cfg.dec_layers

        # Temporal queries: with no context in the TDB they do not depend on the SDB, so (as the release) the whole
        # temporal decoder runs first and its last layer can score every stage's frames.
        tgt_t = tgt_t0
        hidden_t: list[Tensor] = []
        sted_all: list[Tensor] = []
        actioness_all: list[Tensor] = []

        def temporal_stage(k: int, context: tuple[Tensor, Tensor] | None) -> None:
            nonlocal tgt_t
            tgt_t = temporal.layers[k](tgt_t, time_pos, time_mask, memory, memory_key, key_mask, context)
            hidden = temporal.norm(tgt_t)
            hidden_t.append(hidden)
            sted_all.append(self.sted_head(hidden))
            actioness_all.append(self.actioness_head(hidden).squeeze(-1))
            if rec is not None:
                rec[f"time.layer{k}.out_prenorm"] = tgt_t

        if not cfg.context_in_temporal:
            for k in range(num_stages):
                temporal_stage(k, None)

        tgt_s = tgt_s0
        context: tuple[Tensor, Tensor] | None = None
        stages: list[StageOutput] = []
        selected_frames: list[Tensor] = []
        for k in range(num_stages):
            if cfg.context_in_temporal:
                temporal_stage(k, context)
            sine = sine_box_embedding(anchors, d)  # (B, T, 2d)
            query_pos = spatial.ref_point_head(sine)
            query_sine = sine[..., :d] if k == 0 else sine[..., :d] * spatial.query_scale(tgt_s)
            layer_rec: dict[str, Tensor] | None = {} if rec is not None else None
            if rec is not None:
                rec.update(
                    {
                        f"stage{k}.query_in": tgt_s,
                        f"stage{k}.query_sine_full": sine,
                        f"stage{k}.query_pos": query_pos,
                        f"stage{k}.query_sine_scaled": query_sine,
                    }
                )
                if context is not None:
                    rec[f"stage{k}.context_in"], rec[f"stage{k}.context_in_pad"] = context
            tgt_s = spatial.layers[k](
                tgt_s, query_pos, query_sine, time_pos, time_mask, memory, dec_pos, visible, context, layer_rec
            )
            delta = self.box_head(tgt_s)
            if cfg.box_refine == "anchor":
                delta = delta + torch.logit(anchors, eps=1e-5)
            boxes = delta.sigmoid()
            anchors = boxes.detach()
            if rec is not None:
                rec.update({f"stage{k}.{name}": value for name, value in cast(dict[str, Tensor], layer_rec).items()})
                rec[f"stage{k}.query_out"] = tgt_s

            conf = None
            context = None
            if self.icr is not None:
                roi_app, roi_mot = cast(InstanceContextGeneration, self.icg)(memory, (h, w), anchors)  # set with icr
                conf_app, conf_mot = self.icr.confidences(roi_app, roi_mot)
                conf = conf_app + conf_mot
                # 'last' (release): the last temporal layer scores every stage; 'stage': stage k's own.
                scoring = actioness_all[-1] if cfg.temporal_score_layer == "last" else actioness_all[k]
                selected, spatial_score, temporal_score = self.icr.select(
                    conf_app, conf_mot, scoring, time_mask, anchors, targets
                )
                selected_frames.append(selected)
                # The context after the last stage has no consumer; build it only when a test asks for it.
                if (k < num_stages - 1 or rec is not None) and bool(selected.any()):
                    context = self.icr.context(roi_app, roi_mot, selected)
                if rec is not None:
                    rec.update(
                        {
                            f"stage{k}.roi_2d": roi_app,
                            f"stage{k}.roi_3d": roi_mot,
                            f"stage{k}.select_score": spatial_score,
                            f"stage{k}.temporal_score": scoring if temporal_score is None else temporal_score,
                            f"stage{k}.selected": selected,
                        }
                    )
                    if context is not None:
                        rec[f"stage{k}.context_out"], rec[f"stage{k}.context_out_pad"] = context
            stages.append(StageOutput(boxes, conf, sted_all[k], actioness_all[k]))

        if rec is not None:
            rec["time.hidden_normed"] = torch.stack(hidden_t)
            rec["dec.time_info"] = actioness_all[-1]
        last = stages[-1]
        return CGSTVGOutput(
            pred_boxes=last.pred_boxes,
            boxes_conf=last.boxes_conf,
            pred_sted=last.pred_sted,
            pred_actioness=last.pred_actioness,
            time_mask=time_mask,
            aux_outputs=stages[:-1],
            selected_frames=selected_frames,
            intermediates=rec,
        )

    def _text_queries(
        self, memory: Tensor, hw: int, n_text: int, text_pad: Tensor, time_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`query_init='text'`: (spatial, temporal) initial queries (B, T, d), the same for every frame of a video,
        from the memory's text tokens mean-pooled over real tokens and real frames."""
        b, t = time_mask.shape
        words = memory[:, hw : hw + n_text]  # (BT, L, d): the sentence after attending to each frame
        keep = (~text_pad).to(memory.dtype)[..., None]
        per_frame = (words * keep).sum(1) / keep.sum(1).clamp(min=1)
        frames = (~time_mask).to(memory.dtype)[..., None]
        sentence = (per_frame.view(b, t, -1) * frames).sum(1) / frames.sum(1)
        tgt_s = self.spatial_query_init(sentence)[:, None].expand(b, t, -1)
        tgt_t = self.temporal_query_init(sentence)[:, None].expand(b, t, -1)
        return tgt_s, tgt_t

    @staticmethod
    def _check_inputs(
        vis_feat: Tensor,
        vis_mask: Tensor,
        motion_feat: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        time_mask: Tensor | None,
    ) -> None:
        if vis_feat.dim() != 5:
            raise ValueError(f"CGSTVGHead: vis_feat must be (B, T, C, H', W'), got {tuple(vis_feat.shape)}")
        b, t, _, h, w = vis_feat.shape
        if motion_feat.dim() != 5 or (*motion_feat.shape[:2], *motion_feat.shape[3:]) != (b, t, h, w):
            raise ValueError(
                f"CGSTVGHead: motion_feat has shape {tuple(motion_feat.shape)}, expected ({b}, {t}, C, {h}, {w})"
            )
        if text_hidden.dim() != 3 or text_hidden.shape[0] != b:
            raise ValueError(f"CGSTVGHead: text_hidden must be (B={b}, L, C), got {tuple(text_hidden.shape)}")
        expected = {"vis_mask": (vis_mask, (b, t, h, w)), "text_mask": (text_mask, (b, text_hidden.shape[1]))}
        if time_mask is not None:
            expected["time_mask"] = (time_mask, (b, t))
        for name, (mask, shape) in expected.items():
            if tuple(mask.shape) != shape:
                raise ValueError(f"CGSTVGHead: {name} has shape {tuple(mask.shape)}, expected {shape}")
            if mask.dtype != torch.bool:
                raise ValueError(f"CGSTVGHead: {name} must be bool (True = padding), got {mask.dtype}")
        if time_mask is not None and bool(time_mask.all(dim=1).any()):
            raise ValueError("CGSTVGHead: a video of the batch has every frame padded (time_mask all True)")
