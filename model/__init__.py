"""Model: the dual-tower audio-video diffusion transformer (MAVIN / MTSS family), single-device torch."""
