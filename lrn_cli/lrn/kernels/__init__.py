"""Fused LRN kernels: C on the CPU (`lrn_cpu.c`), PyTorch operations elsewhere."""
