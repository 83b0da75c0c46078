"""The CG-STVG model: backbones, multimodal encoder, decoders with ICG/ICR, heads, criterion, post-processing."""
