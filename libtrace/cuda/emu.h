/* emu.h: a CPU emulation of the CUDA features that stats.cu uses, so that the
 * device path's own code runs, one thread at a time, where there is no GPU
 * (make check; see tests/gpu/test-device.c).  Each thread of a block is a
 * coroutine (ucontext) that runs until it reaches a barrier; a barrier opens
 * when every live thread of its warp (__syncwarp) or block (__syncthreads)
 * waits at it, and a barrier that can never open is reported as a deadlock.
 * Blocks run one after another, so ordering bugs between blocks and data
 * races inside a warp are not found here: compute-sanitizer's racecheck on a
 * GPU is for those.  Shared memory starts filled with 0xA5 bytes, so reading
 * what no thread wrote shows up as garbage.  Test builds only. */
#ifndef ATC_EMU_H
#define ATC_EMU_H

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define ATC_NOINLINE __attribute__((noinline))
/* Blocks run one at a time, so one static per kernel is "per block". */
#define __shared__ static

struct dim3 {
	unsigned x, y, z;
	dim3(unsigned ax = 1, unsigned ay = 1, unsigned az = 1) : x(ax), y(ay), z(az) {}
};

struct __attribute__((aligned(16))) uint4 {
	unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w)
{
	return uint4{x, y, z, w};
}

namespace emu {

enum thread_state { RUNNABLE, AT_SYNCTHREADS, AT_SYNCWARP, FINISHED };

struct thread {
	ucontext_t context;
	thread_state state;
	std::vector<char> stack;
};

inline dim3 thread_index, block_index, block_dim, grid_dim;
inline std::vector<thread> threads;
inline ucontext_t scheduler;
inline unsigned current;
inline std::function<void()> kernel_body;
inline std::vector<unsigned char> dynamic_shared;
inline std::vector<int> votes;

inline void wait_at(thread_state s)
{
	threads[current].state = s;
	swapcontext(&threads[current].context, &scheduler);
	thread_index = dim3(current);
}

inline void thread_entry()
{
	kernel_body();
	threads[current].state = FINISHED;
}

/* Open the barriers that every live thread concerned waits at; false if none. */
inline bool open_barriers()
{
	size_t n = threads.size();
	bool opened = false;
	for (size_t w = 0; w < n; w += 32) {
		size_t end = w + 32 < n ? w + 32 : n;
		bool all = true, some = false;
		for (size_t t = w; t < end; t++) {
			all &= threads[t].state == AT_SYNCWARP || threads[t].state == FINISHED;
			some |= threads[t].state == AT_SYNCWARP;
		}
		if (all && some) {
			for (size_t t = w; t < end; t++)
				if (threads[t].state == AT_SYNCWARP)
					threads[t].state = RUNNABLE;
			opened = true;
		}
	}
	if (opened)
		return true;
	bool all = true, some = false;
	for (auto &t : threads) {
		all &= t.state == AT_SYNCTHREADS || t.state == FINISHED;
		some |= t.state == AT_SYNCTHREADS;
	}
	if (!(all && some))
		return false;
	for (auto &t : threads)
		if (t.state == AT_SYNCTHREADS)
			t.state = RUNNABLE;
	return true;
}

inline void run_block(unsigned nthreads)
{
	threads.assign(nthreads, thread());
	votes.assign(nthreads, 0);
	for (unsigned t = 0; t < nthreads; t++) {
		thread &th = threads[t];
		th.stack.resize(256 << 10);
		getcontext(&th.context);
		th.context.uc_stack.ss_sp = th.stack.data();
		th.context.uc_stack.ss_size = th.stack.size();
		th.context.uc_link = &scheduler;
		makecontext(&th.context, thread_entry, 0);
		th.state = RUNNABLE;
	}
	for (;;) {
		for (unsigned t = 0; t < nthreads; t++) {
			if (threads[t].state != RUNNABLE)
				continue;
			current = t;
			thread_index = dim3(t);
			swapcontext(&scheduler, &threads[t].context);
		}
		bool live = false;
		for (auto &t : threads)
			live |= t.state != FINISHED;
		if (!live)
			return;
		if (!open_barriers()) {
			fprintf(stderr, "emu: deadlock in block %u: a barrier can never open\n",
			        block_index.x);
			abort();
		}
	}
}

inline void launch(dim3 grid, dim3 block, size_t shared_bytes, std::function<void()> body)
{
	kernel_body = std::move(body);
	grid_dim = grid;
	block_dim = block;
	for (unsigned b = 0; b < grid.x; b++) {
		block_index = dim3(b);
		dynamic_shared.assign(shared_bytes + 16, 0xA5);
		run_block(block.x);
	}
}

/* A warp's sum of value, every live thread of it voting. */
inline unsigned sum_in_warp(unsigned value)
{
	unsigned me = current, first = me & ~31u;
	votes[me] = (int)value;
	wait_at(AT_SYNCWARP);
	unsigned sum = 0;
	for (unsigned t = first; t < first + 32 && t < threads.size(); t++)
		sum += (unsigned)votes[t];
	wait_at(AT_SYNCWARP); /* nobody votes again before everyone has read */
	return sum;
}

inline bool any_in_warp(bool predicate)
{
	return sum_in_warp(predicate ? 1u : 0u) != 0;
}

/* ---- the runtime API, on host memory */
inline std::map<const char *, size_t> allocations;
inline std::mutex allocations_mu; /* the library's sample thread frees too */

inline bool is_device_pointer(const void *p)
{
	std::lock_guard<std::mutex> hold(allocations_mu);
	const char *c = static_cast<const char *>(p);
	auto it = allocations.upper_bound(c);
	if (it == allocations.begin())
		return false;
	--it;
	return c >= it->first && c < it->first + it->second;
}

} // namespace emu

#define threadIdx emu::thread_index
#define blockIdx emu::block_index
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() { emu::wait_at(emu::AT_SYNCTHREADS); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait_at(emu::AT_SYNCWARP); }
inline bool __any_sync(unsigned, bool predicate) { return emu::any_in_warp(predicate); }
inline unsigned __reduce_add_sync(unsigned, unsigned value) { return emu::sum_in_warp(value); }
inline void __threadfence() {}
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T atomicAdd(T *p, T v)
{
	T old = *p;
	*p = old + v;
	return old;
}

#define ATC_DYNAMIC_SHARED(name) unsigned char *name = emu::dynamic_shared.data()
#define ATC_LAUNCH(kernel, grid, block, shared, stream, ...) \
	((void)(stream), emu::launch(grid, block, shared, [&] { kernel(__VA_ARGS__); }))

typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
       cudaErrorNotReady = 600 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
                      cudaMemcpyDefault };
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1,
                      cudaMemoryTypeDevice = 2 };
struct cudaPointerAttributes {
	cudaMemoryType type;
	int device;
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

inline const char *cudaGetErrorString(cudaError_t e)
{
	return e == cudaSuccess ? "no error" : e == cudaErrorMemoryAllocation ? "out of memory"
	                                                                      : "emulated error";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int *n)
{
	*n = 1;
	return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int *d)
{
	*d = 0;
	return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d)
{
	return d == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
/* Few "multiprocessors", so that the tests split rows across blocks. */
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int)
{
	*v = 3;
	return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t bytes)
{
	*p = malloc(bytes ? bytes : 1);
	if (!*p)
		return cudaErrorMemoryAllocation;
	memset(*p, 0x5A, bytes); /* cudaMalloc'd memory is not zeroed either */
	std::lock_guard<std::mutex> hold(emu::allocations_mu);
	emu::allocations[static_cast<const char *>(*p)] = bytes;
	return cudaSuccess;
}
inline cudaError_t cudaFree(void *p)
{
	if (p) {
		std::lock_guard<std::mutex> hold(emu::allocations_mu);
		emu::allocations.erase(static_cast<const char *>(p));
		free(p);
	}
	return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void **p, size_t bytes)
{
	*p = malloc(bytes ? bytes : 1);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeHost(void *p)
{
	free(p);
	return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p)
{
	a->type = emu::is_device_pointer(p) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
	a->device = 0;
	return cudaSuccess;
}
inline cudaError_t cudaMemset(void *dst, int value, size_t n)
{
	memset(dst, value, n);
	return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind)
{
	memmove(dst, src, n);
	return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                                   cudaStream_t = nullptr)
{
	return cudaMemcpy(dst, src, n, k);
}
inline cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t = nullptr)
{
	memset(dst, value, n);
	return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
	*s = reinterpret_cast<cudaStream_t>(uintptr_t(1));
	return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0)
{
	return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
	*e = reinterpret_cast<cudaEvent_t>(uintptr_t(1));
	return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
/* Stream-ordered pools: plain allocations, as the emulation runs in order. */
typedef void *cudaMemPool_t;
enum cudaMemAllocationType { cudaMemAllocationTypePinned = 1 };
enum cudaMemLocationType { cudaMemLocationTypeDevice = 1 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
struct cudaMemLocation {
	cudaMemLocationType type;
	int id;
};
struct cudaMemPoolProps {
	cudaMemAllocationType allocType;
	cudaMemLocation location;
};
inline cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const cudaMemPoolProps *)
{
	*pool = reinterpret_cast<cudaMemPool_t>(uintptr_t(1));
	return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *)
{
	return cudaSuccess;
}
inline cudaError_t cudaMemPoolDestroy(cudaMemPool_t) { return cudaSuccess; }
inline cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t, cudaStream_t)
{
	return cudaMalloc(p, bytes);
}
inline cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return cudaFree(p); }
#define cudaStreamNonBlocking 1u
#define cudaEventDisableTiming 2u

#endif /* ATC_EMU_H */
