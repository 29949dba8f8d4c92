// The CUDA engine compiled for the CPU emulator (emulator.h): module basenji2_fast._cuda_emu.
#include "cuda/cuda_engine.cu"
