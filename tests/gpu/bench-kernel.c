/* bench-kernel.c: speed of the device path's fused statistics kernel against
 * a device-to-device copy measured in the same run (acceptance: bytes read /
 * kernel time >= 70% of the copy's bandwidth).  For each shape it times, with
 * CUDA events, the median of several repetitions of
 *   - gpu: 20 at_writer_observe_device calls queued behind a large memset,
 *     timed from its end (GPU time alone: what the kernel costs inference), and
 *   - stream: 20 calls issued back to back (adds the host's launch cost when
 *     the GPU outruns it, as it does on tiny tensors),
 * and the same for cudaMemcpyAsync device to device of the same bytes.  The
 * copy's bandwidth is given both ways: bytes copied per second, and bytes
 * read plus written per second (what the memory system moved).
 * Output: one TSV row per shape and variant on stdout; --json FILE as well;
 * --quick: only the bf16 shapes of 8192 rows or more, histogram and extremes
 * kept (what tests/gpu/run.sh's `variants` step compares).
 * Needs a GPU; exit 77 without one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime.h>

#include "acttrace.h"

#define CALLS 20
#define REPEATS 15

#define CUDA_OK(call)                                                                    \
	do {                                                                                 \
		cudaError_t e_ = (call);                                                         \
		if (e_ != cudaSuccess) {                                                         \
			fprintf(stderr, "bench-kernel: %s:%d: %s\n", __FILE__, __LINE__,             \
			        cudaGetErrorString(e_));                                             \
			exit(1);                                                                     \
		}                                                                                \
	} while (0)

struct shape {
	const char *name;
	enum at_dtype dtype;
	int64_t rows, channels;
	int hist;
	int32_t extremes;
};

static uint64_t rng = 0x853c49e6748fea9bull;

static double gauss(void)
{
	double u[2];
	for (int i = 0; i < 2; i++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		u[i] = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
	}
	return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static uint16_t bf16_of(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	b += 0x7fffu + ((b >> 16) & 1u);
	return (uint16_t)(b >> 16);
}

/* Random activations with a few outlier channels, never zeros. */
static void *device_tensor(const struct shape *s, size_t *bytes)
{
	size_t n = (size_t)(s->rows * s->channels), esize = s->dtype == AT_F32 ? 4 : 2;
	*bytes = n * esize;
	void *host = malloc(*bytes), *dev = NULL;
	if (!host)
		exit(1);
	for (size_t i = 0; i < n; i++) {
		float x = (float)gauss();
		if (i % (size_t)s->channels % 331 == 7)
			x = x * 20 + 50;
		if (s->dtype == AT_F32)
			((float *)host)[i] = x;
		else
			((uint16_t *)host)[i] = bf16_of(x); /* f16 inputs are read the same way */
	}
	CUDA_OK(cudaMalloc(&dev, *bytes));
	CUDA_OK(cudaMemcpy(dev, host, *bytes, cudaMemcpyHostToDevice));
	free(host);
	return dev;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return v[n / 2];
}

struct work {
	struct at_writer *w;
	int32_t point;
	struct at_tensor t;
	void *src, *dst;
	size_t bytes;
	int copy; /* time the copy instead of the kernel */
};

static void issue(struct work *k, cudaStream_t stream)
{
	if (k->copy) {
		CUDA_OK(cudaMemcpyAsync(k->dst, k->src, k->bytes, cudaMemcpyDeviceToDevice, stream));
		return;
	}
	struct at_error err;
	int rc = at_writer_observe_device(k->w, k->point, &k->t, 0, stream, &err);
	if (rc) {
		fprintf(stderr, "bench-kernel: %s\n", err.message);
		exit(1);
	}
}

/* A gap on the stream: a large memset, during which the host queues the
 * calls to time, so that the events around them see GPU time alone (CUDA
 * graphs would do it too, but the library refuses to be captured). */
static void *gap_buffer;
static const size_t GAP_BYTES = (size_t)2 << 30;

/* Milliseconds per call, median over REPEATS: back to back on a stream (the
 * host's launch cost shows when the GPU outruns it), and queued behind a gap
 * (GPU time alone). */
static void time_calls(struct work *k, cudaStream_t stream, double *stream_ms, double *gpu_ms)
{
	cudaEvent_t start, stop;
	CUDA_OK(cudaEventCreate(&start));
	CUDA_OK(cudaEventCreate(&stop));
	if (!gap_buffer)
		CUDA_OK(cudaMalloc(&gap_buffer, GAP_BYTES));
	double v[REPEATS];
	for (int i = 0; i < 3; i++) /* warm-up: allocations, the first extremes */
		issue(k, stream);
	CUDA_OK(cudaStreamSynchronize(stream));
	for (int queued = 0; queued < 2; queued++) {
		for (int r = 0; r < REPEATS; r++) {
			float ms;
			if (queued)
				CUDA_OK(cudaMemsetAsync(gap_buffer, r, GAP_BYTES, stream));
			CUDA_OK(cudaEventRecord(start, stream));
			for (int i = 0; i < CALLS; i++)
				issue(k, stream);
			CUDA_OK(cudaEventRecord(stop, stream));
			CUDA_OK(cudaEventSynchronize(stop));
			CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
			v[r] = ms / CALLS;
		}
		*(queued ? gpu_ms : stream_ms) = median(v, REPEATS);
	}
	cudaEventDestroy(start);
	cudaEventDestroy(stop);
}

static const char *dtype_name(enum at_dtype t)
{
	return t == AT_F32 ? "f32" : t == AT_F16 ? "f16" : "bf16";
}

int main(int argc, char **argv)
{
	const char *json_path = NULL;
	int quick = 0; /* only the shapes of the acceptance and Llama's hidden width */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json_path = argv[++i];
		else if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else {
			fprintf(stderr, "usage: bench-kernel [--quick] [--json FILE]\n");
			return 2;
		}
	}
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
		printf("SKIP: no CUDA device\n");
		return 77;
	}
	struct cudaDeviceProp prop;
	CUDA_OK(cudaGetDeviceProperties(&prop, 0));
	static const struct shape shapes[] = {
		{"8192x4096", AT_BF16, 8192, 4096, 1, 64},
		{"1x65536", AT_BF16, 1, 65536, 1, 64},
		{"8192x4096", AT_F32, 8192, 4096, 1, 64},
		{"16384x2048", AT_BF16, 16384, 2048, 1, 64},  /* Llama-1B hidden */
		{"16384x8192", AT_BF16, 16384, 8192, 1, 64},  /* Llama-1B MLP */
		{"16384x512", AT_BF16, 16384, 512, 1, 64},    /* Llama-1B k/v */
		{"8192x4096", AT_BF16, 8192, 4096, 0, 64},    /* no histogram */
		{"8192x4096", AT_BF16, 8192, 4096, 1, 0},     /* no extremes */
		{"8192x4096", AT_BF16, 8192, 4096, 0, 0},     /* moments only */
	};
	FILE *json = json_path ? fopen(json_path, "w") : NULL;
	int json_rows = 0;
	if (json)
		fprintf(json, "{\"device\": \"%s\", \"rows\": [\n", prop.name);
	printf("device\tshape\tdtype\thist\textremes\tbytes\tkernel_gpu_us\tkernel_stream_us\t"
	       "copy_gpu_us\tcopy_stream_us\tread_GBps\tcopy_GBps\tcopy_rw_GBps\t"
	       "vs_copy\tvs_copy_rw\n");
	cudaStream_t stream;
	CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
	char file[256];
	snprintf(file, sizeof file, "%s/bench-kernel-%ld.h5", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
	         (long)getpid());
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct shape *s = &shapes[i];
		if (quick && !(s->dtype == AT_BF16 && s->hist && s->extremes && s->rows >= 8192))
			continue;
		struct work k;
		memset(&k, 0, sizeof k);
		k.src = device_tensor(s, &k.bytes);
		CUDA_OK(cudaMalloc(&k.dst, k.bytes));
		struct at_writer_options o;
		at_writer_options_init(&o);
		o.hist = s->hist;
		o.extremes = s->extremes;
		struct at_error err;
		struct at_point_desc d = {"p", -1, "other", "p", "", "", "out", s->channels};
		if (at_writer_create(&k.w, file, &o, &err) || at_writer_add_point(k.w, &d, &k.point, &err)) {
			fprintf(stderr, "bench-kernel: %s\n", err.message);
			return 1;
		}
		k.t = (struct at_tensor){k.src, s->dtype, 1, s->rows, s->channels, s->rows * s->channels,
		                         s->channels, 1};
		double kernel_stream, kernel_gpu, copy_stream, copy_gpu;
		time_calls(&k, stream, &kernel_stream, &kernel_gpu);
		k.copy = 1;
		time_calls(&k, stream, &copy_stream, &copy_gpu);
		if (at_writer_close(k.w, &err)) {
			fprintf(stderr, "bench-kernel: close: %s\n", err.message);
			return 1;
		}
		double kernel_ms = kernel_gpu > 0 ? kernel_gpu : kernel_stream;
		double copy_ms = copy_gpu > 0 ? copy_gpu : copy_stream;
		double read_gbps = (double)k.bytes / (kernel_ms * 1e6);
		double copy_gbps = (double)k.bytes / (copy_ms * 1e6);
		printf("%s\t%s\t%s\t%d\t%d\t%zu\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\n",
		       prop.name, s->name, dtype_name(s->dtype), s->hist, (int)s->extremes, k.bytes,
		       kernel_gpu * 1e3, kernel_stream * 1e3, copy_gpu * 1e3, copy_stream * 1e3,
		       read_gbps, copy_gbps, 2 * copy_gbps, read_gbps / copy_gbps,
		       read_gbps / (2 * copy_gbps));
		if (json)
			fprintf(json,
			        "%s{\"shape\": \"%s\", \"dtype\": \"%s\", \"hist\": %d, \"extremes\": %d, "
			        "\"bytes\": %zu, \"kernel_gpu_ms\": %.6f, \"kernel_stream_ms\": %.6f, "
			        "\"copy_gpu_ms\": %.6f, \"copy_stream_ms\": %.6f}\n",
			        json_rows++ ? "," : "", s->name, dtype_name(s->dtype), s->hist, (int)s->extremes, k.bytes,
			        kernel_gpu, kernel_stream, copy_gpu, copy_stream);
		fflush(stdout);
		cudaFree(k.src);
		cudaFree(k.dst);
	}
	if (json) {
		fprintf(json, "]}\n");
		fclose(json);
	}
	remove(file);
	return 0;
}
