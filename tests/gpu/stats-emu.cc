// stats-emu.cc: libtrace/cuda/stats.cu compiled as C++ over the CPU emulation
// (libtrace/cuda/emu.h, -DATC_EMU) for tests/gpu/test-device-emu.
#include "../../libtrace/cuda/stats.cu"
