/* timeline.c: where a fold kernel's time goes, block by block.  Needs the
 * library built with nvcc -DATC_TIMELINE (run.sh's `timeline` step does it):
 * the kernel then records, per block, the global timer at its start, when
 * its rows are folded, when its items are done, when it leaves, and its
 * multiprocessor.  For ROWS x CHANNELS bf16 (histogram, 64 extremes) it
 * prints each phase's spread over the blocks, in microseconds from the
 * first block's start, and the kernel's time from CUDA events.
 *   timeline [ROWS CHANNELS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime.h>

#include "acttrace.h"

int atc_timeline_read(unsigned long long *out, unsigned long long *warps, int blocks);

#define CHECK(cond, what)                                         \
	do {                                                          \
		if (!(cond)) {                                            \
			fprintf(stderr, "timeline: %s failed\n", what);      \
			exit(1);                                              \
		}                                                         \
	} while (0)

static int cmp_u64(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int64_t rows = argc > 2 ? atoll(argv[1]) : 8192, channels = argc > 2 ? atoll(argv[2]) : 4096;
	size_t n = (size_t)(rows * channels);
	uint16_t *host = malloc(n * 2);
	CHECK(host, "malloc");
	uint64_t r = 88172645463325252ull;
	for (size_t i = 0; i < n; i++) { /* bf16 of a rough bell curve, no zeros */
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		float x = ((float)(r & 0xffff) + (float)(r >> 16 & 0xffff) - 65535.0f) / 16384.0f + 1e-3f;
		uint32_t b;
		memcpy(&b, &x, 4);
		host[i] = (uint16_t)(b >> 16);
	}
	void *dev;
	CHECK(cudaMalloc(&dev, n * 2) == cudaSuccess, "cudaMalloc");
	CHECK(cudaMemcpy(dev, host, n * 2, cudaMemcpyHostToDevice) == cudaSuccess, "cudaMemcpy");
	char file[256];
	snprintf(file, sizeof file, "/tmp/timeline-%ld.h5", (long)getpid());
	struct at_writer_options o;
	at_writer_options_init(&o);
	struct at_writer *w;
	struct at_error err;
	int32_t point;
	struct at_point_desc d = {"p", -1, "other", "p", "", "", "out", channels};
	CHECK(!at_writer_create(&w, file, &o, &err) && !at_writer_add_point(w, &d, &point, &err),
	      "writer");
	struct at_tensor t = {dev, AT_BF16, 1, rows, channels, rows * channels, channels, 1};
	cudaStream_t st;
	cudaEvent_t a, b;
	CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) == cudaSuccess, "stream");
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	for (int i = 0; i < 5; i++)
		CHECK(!at_writer_observe_device(w, point, &t, 0, st, &err), "observe");
	cudaEventRecord(a, st);
	CHECK(!at_writer_observe_device(w, point, &t, 0, st, &err), "observe");
	cudaEventRecord(b, st);
	CHECK(cudaStreamSynchronize(st) == cudaSuccess, "sync");
	float ms;
	cudaEventElapsedTime(&ms, a, b);
	enum { MAXB = 4096 };
	static unsigned long long tl[MAXB][8], tw[MAXB][16]; /* as the library's TIMELINE_WARPS */
	memset(tl, 0, sizeof tl);
	CHECK(atc_timeline_read(&tl[0][0], &tw[0][0], MAXB) == 0, "read the timeline");
	int blocks = 0;
	unsigned long long t0 = ~0ull;
	for (int i = 0; i < MAXB && tl[i][0]; i++, blocks++)
		if (tl[i][0] < t0)
			t0 = tl[i][0];
	printf("# %lld x %lld bf16: kernel %.1f us (events), %d blocks\n", (long long)rows,
	       (long long)channels, ms * 1e3, blocks);
	static const char *names[] = {"start", "rows folded", "items done", "leaves"};
	printf("phase\tmin_us\tp10_us\tmedian_us\tp90_us\tmax_us\n");
	static unsigned long long v[MAXB];
	for (int ph = 0; ph < 4; ph++) {
		for (int i = 0; i < blocks; i++)
			v[i] = tl[i][ph] - t0;
		qsort(v, (size_t)blocks, sizeof *v, cmp_u64);
		printf("%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", names[ph], v[0] / 1e3,
		       v[blocks / 10] / 1e3, v[blocks / 2] / 1e3, v[blocks * 9 / 10] / 1e3,
		       v[blocks - 1] / 1e3);
	}
	/* how long each block spent in each phase */
	static const char *spans[] = {"prologue+rows", "warp sums stored", "warps combined",
	                              "splits merge", "hist flush", "extremes"};
	static const int from[] = {0, 1, 6, 4, 5, 2}, to[] = {1, 6, 4, 5, 2, 3};
	printf("span\tmin_us\tmedian_us\tmax_us\n");
	for (int ph = 0; ph < 6; ph++) {
		for (int i = 0; i < blocks; i++)
			v[i] = tl[i][to[ph]] - tl[i][from[ph]];
		qsort(v, (size_t)blocks, sizeof *v, cmp_u64);
		printf("%s\t%.2f\t%.2f\t%.2f\n", spans[ph], v[0] / 1e3, v[blocks / 2] / 1e3,
		       v[blocks - 1] / 1e3);
	}
	/* inside a block: its slowest warp against its fastest */
	for (int i = 0; i < blocks; i++) {
		unsigned long long lo = ~0ull, hi = 0;
		for (int j = 0; j < 16 && tw[i][j]; j++) {
			lo = tw[i][j] < lo ? tw[i][j] : lo;
			hi = tw[i][j] > hi ? tw[i][j] : hi;
		}
		v[i] = hi - lo;
	}
	qsort(v, (size_t)blocks, sizeof *v, cmp_u64);
	printf("warp spread\t%.2f\t%.2f\t%.2f\n", v[0] / 1e3, v[blocks / 2] / 1e3, v[blocks - 1] / 1e3);
	int per_sm[1024] = {0}, most = 0, used = 0;
	for (int i = 0; i < blocks; i++)
		if (tl[i][7] < 1024)
			per_sm[tl[i][7]]++;
	for (int i = 0; i < 1024; i++) {
		used += per_sm[i] > 0;
		most = per_sm[i] > most ? per_sm[i] : most;
	}
	printf("# multiprocessors used %d, most blocks on one %d\n", used, most);
	if (getenv("TIMELINE_ALL"))
		for (int i = 0; i < blocks; i++)
			printf("block %d sm %llu: %.2f %.2f %.2f %.2f\n", i, tl[i][7], (tl[i][0] - t0) / 1e3,
			       (tl[i][1] - t0) / 1e3, (tl[i][2] - t0) / 1e3, (tl[i][3] - t0) / 1e3);
	CHECK(!at_writer_close(w, &err), "close");
	remove(file);
	return 0;
}
