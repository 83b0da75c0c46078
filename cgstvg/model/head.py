"""The CG-STVG grounding head: everything between the three backbones and the predictions.

Input projections -> multimodal encoder -> anchor initialisation -> K decoding stages, each a temporal block (TDB)
and a spatial block (SDB) followed by ICG + ICR, whose context guides the next stage's SDB (and TDB with
`context_in_temporal`). Heads: boxes from every SDB output, start/end and actioness logits from every TDB output.

Batch layout (batch-first everywhere): B videos, padded to T frames (`time_mask`), H' x W' feature cells per frame,
L text tokens (`text_mask`). Inference needs no ground truth; `targets` are read only by the 'gt_giou' training
selection of ICR (pass them in training, never at evaluation).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from cgstvg.model.blocks import MLP, AnchorInit, FeatureResizer
from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.encoder import MultimodalEncoder
from cgstvg.model.instance_context import ContextStep, InstanceContextRefinement
from cgstvg.model.memory import DecoderMemory
from cgstvg.model.memory_savers import maybe_checkpoint
from cgstvg.model.position_encoding import sine_position_2d, sine_time_table
from cgstvg.model.recording import Recorder
from cgstvg.model.spatial_decoder import SpatialDecoder, SpatialDecoderLayer
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

    @classmethod
    def from_stages(
        cls,
        stages: list[StageOutput],
        time_mask: Tensor,
        selected_frames: list[Tensor],
        intermediates: dict[str, Tensor] | None = None,
    ) -> CGSTVGOutput:
        """The output of the stages in order (the last one's predictions at the top level)."""
        last = stages[-1]
        return cls(
            pred_boxes=last.pred_boxes,
            boxes_conf=last.boxes_conf,
            pred_sted=last.pred_sted,
            pred_actioness=last.pred_actioness,
            time_mask=time_mask,
            aux_outputs=stages[:-1],
            selected_frames=selected_frames,
            intermediates=intermediates,
        )

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
        self.temporal_decoder = TemporalDecoder(cfg)
        self.spatial_decoder = SpatialDecoder(cfg)
        # ICR owns the parameter-free ICG (cgstvg.model.instance_context); None for context_mode 'none'.
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
        self.checkpoint_decoder = False  # checkpoint each decoding stage (cgstvg.model.memory_savers)
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
        """Paper Fig. 2: the encoder, then per stage k: TDB_k, SDB_k, then ICG + ICR, whose context guides stage k + 1.

        Args:
            vis_feat: (B, T, C_a, H', W') appearance features (ResNet layer4).
            vis_mask: (B, T, H', W') bool, True = padded cell.
            motion_feat: (B, T, C_m, H', W') motion features (Video Swin stage 4).
            text_hidden: (B, L, C_t) text encoder output; text_mask: (B, L) bool, True = padding token.
            time_mask: (B, T) bool, True = padded frame; None = every frame is real.
            targets: GT for the 'gt_giou' training selection; leave None at inference.
            return_intermediates: also return internal tensors (`CGSTVGOutput.intermediates`).
        """
        cfg, num_stages = self.cfg, self.cfg.dec_layers
        time_mask = self._check_inputs(vis_feat, vis_mask, motion_feat, text_hidden, text_mask, time_mask)
        with self._recorder() if return_intermediates else contextlib.nullcontext() as rec:
            memory, frames_cls = self._encode(vis_feat, vis_mask, motion_feat, text_hidden, text_mask, time_mask)
            anchors = self.anchor_init(frames_cls).sigmoid()
            if rec is not None:
                rec.put(self._encoder_record(memory, frames_cls, anchors))
            queries_s, queries_t = self._initial_queries(memory, vis_feat)
            ckpt = self._checkpoint_stages(memory, recording=rec is not None)
            # Without context in the TDB the temporal queries do not depend on the SDB, so (as the release) the
            # whole temporal decoder runs first and its last layer can score every stage's frames.
            temporal: list[tuple[Tensor, Tensor]] = []  # per stage: start/end logits, actioness logits
            for k in range(0 if cfg.context_in_temporal else num_stages):
                queries_t = self._temporal_stage(k, queries_t, memory, None, temporal, ckpt)
            context: tuple[Tensor, Tensor] | None = None
            stages: list[StageOutput] = []
            selected_frames: list[Tensor] = []
            for k in range(num_stages):
                if cfg.context_in_temporal:
                    queries_t = self._temporal_stage(k, queries_t, memory, context, temporal, ckpt)
                queries_s, boxes = maybe_checkpoint(
                    ckpt, self.spatial_decoder.stage, k, queries_s, anchors, memory, context, self.box_head
                )
                anchors = boxes.detach()
                conf, context = None, None
                if self.icr is not None:
                    # 'last' (release): the last temporal layer scores every stage; 'stage': stage k's own.
                    scoring = temporal[-1 if cfg.temporal_score_layer == "last" else k][1]
                    # The context after the last stage has no consumer; it is built only when a test records it.
                    step = self.icr(memory, anchors, scoring, targets, k < num_stages - 1 or rec is not None)
                    conf, context = step.conf, step.context
                    selected_frames.append(step.selected)
                stages.append(StageOutput(boxes, conf, *temporal[k]))
            if rec is not None:
                rec.put({"dec.time_info": temporal[-1][1]})
        return CGSTVGOutput.from_stages(stages, time_mask, selected_frames, None if rec is None else rec.tensors)

    def _checkpoint_stages(self, memory: DecoderMemory, recording: bool) -> bool:
        """Whether the decoding stages run under activation checkpointing (`checkpoint_decoder`, not while the
        recorder's hooks run: they would fire again in a recomputation, so tests that record run unsaved)."""
        if not self.checkpoint_decoder or recording:
            return False
        # Built here, outside the checkpointed stages: a cached property first computed inside one would be cached
        # during the forward but not during its recomputation (which must save the same tensors).
        memory.key  # noqa: B018
        return True

    def _encode(
        self,
        vis_feat: Tensor,
        vis_mask: Tensor,
        motion_feat: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        time_mask: Tensor,
    ) -> tuple[DecoderMemory, Tensor]:
        """The multimodal encoder over each frame's tokens; returns its memory for the decoders and the per-frame
        mean of the memory (B, T, d) that initialises the anchors."""
        cfg = self.cfg
        b, t, _, h, w = vis_feat.shape
        d, hw, n_text = cfg.d_model, h * w, text_hidden.shape[1]
        # Tokens per frame: [appearance H'W' ; text L ; motion H'W'] (the release's order), frames as the batch.
        cells = vis_mask.flatten(0, 1)  # (BT, H, W)
        # (BT, HW, d), computed in float32 (the release's table) and in the features' dtype (float64 checks)
        vis_pos = sine_position_2d(cells, d).flatten(1, 2).to(vis_feat.dtype)
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
        decoder_memory = DecoderMemory(
            tokens=memory,
            pos=dec_pos,
            pad=key_mask,
            visible=~key_mask if cfg.spatial_key_padding_mask else None,
            time_pos=self.time_table[:t],
            time_mask=time_mask,
            grid=(h, w),
        )
        return decoder_memory, frames_cls.view(b, t, d)

    def _initial_queries(self, memory: DecoderMemory, vis_feat: Tensor) -> tuple[Tensor, Tensor]:
        """(spatial, temporal) queries before the first stage, (B, T, d) each: zeros (release) or from the text."""
        if self.cfg.query_init == "text":
            return self._text_queries(memory)
        zeros = vis_feat.new_zeros(*memory.time_mask.shape, self.cfg.d_model)
        return zeros, zeros

    def _temporal_stage(
        self,
        k: int,
        queries: Tensor,
        memory: DecoderMemory,
        context: tuple[Tensor, Tensor] | None,
        predictions: list[tuple[Tensor, Tensor]],
        checkpointed: bool = False,
    ) -> Tensor:
        """TDB_k and the temporal heads on its normed output: appends (start/end logits (B, T, 2), actioness logits
        (B, T)) to `predictions` and returns the queries P_k. `checkpointed`: recompute TDB_k in the backward."""
        queries, hidden = maybe_checkpoint(checkpointed, self.temporal_decoder.stage, k, queries, memory, context)
        predictions.append((self.sted_head(hidden), self.actioness_head(hidden).squeeze(-1)))
        return queries

    @staticmethod
    def _encoder_record(memory: DecoderMemory, frames_cls: Tensor, anchors: Tensor) -> dict[str, Tensor]:
        """The recorded tensors that are no module's input or output (names of the release's fixtures)."""
        h, w = memory.grid
        return {
            "vis_pos": memory.pos[:, : h * w].unflatten(1, (h, w)),
            "enc.key_padding_mask": memory.pad,
            "enc.frames_cls": frames_cls,
            "enc.videos_cls": frames_cls.mean(dim=1),
            "dec.init_anchors": anchors,
            "dec.query_time_embed": memory.time_pos,
        }

    def _recorder(self) -> Recorder:
        """Hooks that record the internal tensors the release's fixtures hold (tests/test_model_equivalence.py)."""
        rec = Recorder()
        for module, name in (
            (self.input_proj, "input_proj_out"),
            (self.motion_proj, "motion_proj_out"),
            (self.text_resizer, "text_resized"),
            (self.encoder, "enc.memory"),
        ):
            rec.output(module, name)
        for k, layer in enumerate(self.temporal_decoder.layers):
            rec.output(layer, f"time.layer{k}.out_prenorm")
        rec.stack(self.temporal_decoder.norm, "time.hidden_normed")
        spatial = self.spatial_decoder
        rec.inputs(spatial.ref_point_head, x="stage{k}.query_sine_full")
        rec.output(spatial.ref_point_head, "stage{k}.query_pos")
        for k, layer in enumerate(cast(list[SpatialDecoderLayer], spatial.layers)):
            rec.inputs(
                layer,
                tgt=f"stage{k}.query_in",
                query_sine=f"stage{k}.query_sine_scaled",
                context=(f"stage{k}.context_in", f"stage{k}.context_in_pad"),
            )
            rec.output(layer, f"stage{k}.query_out")
            rec.output(layer.self_attn, (f"stage{k}.self_attn_out", None))
            if layer.context_attn is not None:
                rec.inputs(layer.context_attn, queries=f"stage{k}.ca2_in")
                rec.output(layer.context_attn, f"stage{k}.ca2_out")
        if self.icr is not None:
            rec.output(self.icr.icg, ("stage{k}.roi_2d", "stage{k}.roi_3d"))
            names = {
                "selected": "stage{k}.selected",
                "context": ("stage{k}.context_out", "stage{k}.context_out_pad"),
                "spatial_score": "stage{k}.select_score",
                "temporal_score": "stage{k}.temporal_score",
            }
            rec.output(self.icr, tuple(names.get(f) for f in ContextStep._fields))
        return rec

    def _text_queries(self, memory: DecoderMemory) -> tuple[Tensor, Tensor]:
        """`query_init='text'`: (spatial, temporal) initial queries (B, T, d), the same for every frame of a video,
        from the memory's text tokens mean-pooled over real tokens and real frames."""
        b, t = memory.time_mask.shape
        words, text_pad = memory.text  # (BT, L, d): the sentence after attending to each frame
        keep = (~text_pad).to(words.dtype)[..., None]
        per_frame = (words * keep).sum(1) / keep.sum(1).clamp(min=1)
        frames = (~memory.time_mask).to(words.dtype)[..., None]
        sentence = (per_frame.view(b, t, -1) * frames).sum(1) / frames.sum(1)
        tgt_s = self.spatial_query_init(sentence)[:, None].expand(b, t, -1)
        tgt_t = self.temporal_query_init(sentence)[:, None].expand(b, t, -1)
        return tgt_s, tgt_t

    def _check_inputs(
        self,
        vis_feat: Tensor,
        vis_mask: Tensor,
        motion_feat: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        time_mask: Tensor | None,
    ) -> Tensor:
        """Raise on inputs of the wrong shape or dtype; return `time_mask` (all False when None)."""
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
        if t > self.time_table.shape[0]:
            raise ValueError(f"CGSTVGHead: {t} frames exceed max_video_len + 1 = {self.time_table.shape[0]}")
        return torch.zeros(b, t, dtype=torch.bool, device=vis_feat.device) if time_mask is None else time_mask
