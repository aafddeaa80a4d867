/* device.c: the device (CUDA) path of the capture API.  at_writer_observe_device
 * queues a point's fused reduction (cuda/stats.cu) on the caller's stream and
 * gathers the rows the sampling policy takes; checkpoints drain both into the
 * writer.  Always built: without CUDA every entry point says so (AT_ENOSYS). */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "extension.h"
#include "internal.h"
#include "reservoir.h"

#if defined(HAVE_CUDA) || defined(ATC_EMU)
#define WITH_CUDA 1
#include "cuda/stats.h"
#endif

/* Checks shared by both builds, so that a bad call says what is wrong with it
 * rather than that CUDA is missing. */
static int check_observe(struct at_writer *w, int32_t point, const struct at_tensor *t,
                         int64_t token_base, struct at_error *err)
{
	if (!w)
		return at_fail(err, AT_EINVAL, "observe_device: NULL writer");
	const struct at_point_desc *d = writer_point_desc(w, point);
	if (!d)
		return at_fail(err, AT_EINVAL, "%s: no point with id %d", writer_path(w), (int)point);
	int status = at_tensor_check(t, err);
	if (status)
		return status;
	if (t->channels != d->channels)
		return at_fail(err, AT_EINVAL, "%s: point '%s' has %lld channels, tensor has %lld",
		               writer_path(w), d->name, (long long)d->channels, (long long)t->channels);
	if (t->rows > 0 && t->batches > INT64_MAX / t->rows)
		return at_fail(err, AT_EINVAL, "tensor: %lld x %lld rows overflow",
		               (long long)t->batches, (long long)t->rows);
	int64_t end = token_base + t->batches * t->rows;
	if (writer_options(w)->sample_policy == AT_SAMPLE_FIRST &&
	    (token_base < 0 || end > writer_tokens(w)))
		return at_fail(err, AT_EINVAL,
		               "%s: sampling the first tokens of each sequence needs tokens "
		               "[%lld, %lld) in /tokens (add tokens before observing)",
		               writer_path(w), (long long)token_base, (long long)end);
	return AT_OK;
}

static int check_source(struct at_writer *w, int32_t point, int32_t source_point,
                        struct at_error *err)
{
	(void)point;
	if (!w)
		return at_fail(err, AT_EINVAL, "observe_same: NULL writer");
	if (!writer_point_desc(w, source_point))
		return at_fail(err, AT_EINVAL, "%s: no source point with id %d", writer_path(w),
		               (int)source_point);
	return AT_OK;
}

/* The host path reads the tensor again: its accumulators are the writer's,
 * which the device path drains into, and host speed is not what this call
 * is for.  The source is checked all the same, so that a caller's mistake
 * shows on either path. */
int at_writer_observe_same(struct at_writer *w, int32_t point, int32_t source_point,
                           const struct at_tensor *t, int64_t token_base, struct at_error *err)
{
	int status = check_source(w, point, source_point, err);
	if (status)
		return status;
	return at_writer_observe(w, point, t, token_base, err);
}

#ifndef WITH_CUDA

int at_cuda_available(void)
{
	return 0;
}

int at_writer_observe_device(struct at_writer *w, int32_t point, const struct at_tensor *t,
                             int64_t token_base, void *cuda_stream, struct at_error *err)
{
	(void)cuda_stream;
	int status = check_observe(w, point, t, token_base, err);
	if (status)
		return status;
	return at_fail(err, AT_ENOSYS,
	               "%s: built without CUDA: observing device memory needs libacttrace "
	               "configured --with-cuda",
	               writer_path(w));
}

int at_writer_observe_device_same(struct at_writer *w, int32_t point, int32_t source_point,
                                  const struct at_tensor *t, int64_t token_base,
                                  void *cuda_stream, struct at_error *err)
{
	int status = check_source(w, point, source_point, err);
	if (status)
		return status;
	return at_writer_observe_device(w, point, t, token_base, cuda_stream, err);
}

#else /* WITH_CUDA */

/* The writer calls these back (extension.h) once the device path has state. */
static int device_checkpoint(struct at_writer *w, struct at_error *err);
static void device_point_free(void *device);
static void device_writer_free(void *device);

static const struct writer_extension device_extension = {
	.flush = device_checkpoint,
	.free_point = device_point_free,
	.free_writer = device_writer_free,
};

/* Sampled rows waiting on the device for the sample thread may hold this much
 * device memory, or the writer's sample_bytes_in_flight where that is
 * larger; past it, capture waits for the oldest batch (samples are never lost
 * to a slow writer, and statistics never wait for samples). */
#define SAMPLE_BYTES_IN_FLIGHT ((size_t)1 << 30)

static size_t device_bytes_in_flight(struct at_writer *w)
{
	int64_t asked = writer_options(w)->sample_bytes_in_flight;
	return asked > (int64_t)SAMPLE_BYTES_IN_FLIGHT ? (size_t)asked : SAMPLE_BYTES_IN_FLIGHT;
}

/* The last change of a point's device accumulators, so that another point
 * shown the same tensor can take the result instead of reading it again
 * (at_writer_observe_device_same). */
struct last_observation {
	int valid;              /* 0 after a drain or a failed call */
	struct at_tensor tensor;
	int64_t token_base;
	void *stream;
	uint64_t state_before;  /* the point's state before it */
};

/* States name the contents of a point's device accumulators (and the
 * extremes' floor that a drain keeps): two points with the same state hold
 * the same bytes.  STATE_EMPTY is a new point's; a full observation makes a
 * fresh state, never seen before; a copy takes its source's; a drain turns
 * state s into s | STATE_DRAINED, the same for every point that held s.  (A
 * point is drained only with rows pending, which only an observation or a
 * copy gives it: a drained state is never drained again.) */
#define STATE_EMPTY 0u
#define STATE_DRAINED ((uint64_t)1 << 63)

struct device_point {
	struct cuda_point *stats;
	uint64_t host_seen_max; /* most values a channel of the host statistics holds */
	/* sampling, the hooks' view: the rows the writer had taken before the
	 * point's first device call (-1 until then) and the rows handed to the
	 * sample thread since; the reservoir's bar as the thread last saw it
	 * (guarded by the device writer's mu).  Neither needs the writer's lock:
	 * a stale view only takes rows the writer then drops, and counts. */
	int64_t samples_before, samples_handed;
	int64_t dropped_unsent; /* rows beyond max_samples, for the next batch or checkpoint */
	int bar_full;
	uint64_t bar_key;
	int64_t bar_token;
	uint64_t state;
	struct last_observation last;
};

/* Rows of one observe call, gathered on the device, on their way to the
 * writer. */
struct sample_batch {
	int32_t point;
	struct device_point *dp; /* the point's state, which the retire thread must not look up */
	int64_t n, n_dropped;
	enum at_dtype dtype;
	int64_t *tokens;
	void *rows;      /* device memory of the pool: [n][channels] in the tensor's dtype */
	size_t bytes;
	void *gathered;  /* event: the rows are in `rows` */
};

/* Sampled rows go from the hooks to the writer in two steps.  The hooks'
 * thread gathers them into device memory (a batch), which costs it one
 * launch; the sample thread copies each batch to the host and hands its rows
 * to the writer (copies into its chunks, a reservoir's bookkeeping), so that
 * the hooks pay neither the copy nor the writer.  Rows wait on the device, in
 * a pool of its own that keeps what is freed: the hooks wait only when the
 * batches there would pass the in-flight bound. */
struct device_writer {
	uint64_t states_made; /* fresh states so far (see STATE_EMPTY); the hooks' thread only */
	int device;           /* the hooks' CUDA device, made the retire thread's */
	void *pool;           /* device memory for batches */
	void *copy_stream;    /* the retire thread's */
	void *staging;        /* pinned, staging_bytes: where the retire thread copies a batch */
	struct token_keys *keys; /* the reservoir's, of the last tokens sampled */
	size_t staging_bytes;
	pthread_t retire_thread;
	int retire_started;
	/* everything below is guarded by mu */
	pthread_mutex_t mu;
	pthread_cond_t wake; /* a batch queued, or stop */
	pthread_cond_t room; /* a batch retired */
	int stop;            /* the retire thread leaves, discarding what is queued */
	int retire_status;   /* the retire thread's first failure, reported by every later call */
	struct at_error retire_err;
	struct sample_batch *batches; /* oldest first; batches[0] may be being retired */
	size_t n_batches, batches_capacity;
	size_t bytes_in_flight;
};

/* The reservoir's keys of tokens [base, base + n): the same for every point
 * of a forward, so computed once (the hooks' thread only). */
struct token_keys {
	int64_t base, n, capacity;
	uint64_t *key;
};

int at_cuda_available(void)
{
	return atc_device_check(NULL) == AT_OK;
}

static uint64_t host_seen_max(const struct at_stats *s)
{
	uint64_t most = 0;
	for (int64_t c = 0; c < s->channels; c++) {
		uint64_t seen = s->count[c] + s->nonfinite[c];
		most = seen > most ? seen : most;
	}
	return most;
}

static int point_state(struct at_writer *w, int32_t point, struct device_point **out,
                       struct at_error *err)
{
	void **slot = writer_point_state(w, point);
	if (*slot) {
		*out = *slot;
		return AT_OK;
	}
	int status = writer_attach(w, &device_extension, err);
	if (status == AT_OK)
		status = atc_device_check(err);
	if (status)
		return status;
	const struct at_writer_options *o = writer_options(w);
	struct device_point *dp = calloc(1, sizeof *dp);
	if (!dp)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
	status = atc_point_create(&dp->stats, writer_point_desc(w, point)->channels, o->hist,
	                          o->extremes, err);
	if (status) {
		free(dp);
		return status;
	}
	dp->host_seen_max = host_seen_max(writer_point_stats(w, point));
	dp->samples_before = -1;
	*slot = dp;
	*out = dp;
	return AT_OK;
}

/* Histogram bins are 32-bit: refuse, before queueing anything, a call after
 * which a channel could hold more values than one bin can count. */
static int check_hist_room(struct at_writer *w, const struct device_point *dp, int64_t rows,
                           struct at_error *err)
{
	if (!writer_options(w)->hist)
		return AT_OK;
	uint64_t seen = dp->host_seen_max + (uint64_t)atc_point_rows_pending(dp->stats);
	if ((uint64_t)rows <= UINT32_MAX && seen <= UINT32_MAX - (uint64_t)rows)
		return AT_OK;
	return at_fail(err, AT_ERANGE,
	               "%s: a channel would hold %llu values, more than a 32-bit histogram bin "
	               "can count (checkpoint more often, or use a writer per shard)",
	               writer_path(w), (unsigned long long)(seen + (uint64_t)rows));
}

/* ---------------------------------------------------------------- sampling */

/* The retire thread's pinned staging, at least `bytes`. */
static int staging_reserve(struct device_writer *dw, size_t bytes, struct at_error *err)
{
	if (dw->staging_bytes >= bytes)
		return AT_OK;
	size_t size = dw->staging_bytes ? dw->staging_bytes : (size_t)1 << 24;
	while (size < bytes)
		size *= 2;
	atc_free_pinned(dw->staging);
	dw->staging = NULL;
	dw->staging_bytes = 0;
	int status = atc_malloc_pinned(&dw->staging, size, err);
	if (status == AT_OK)
		dw->staging_bytes = size;
	return status;
}

static int device_writer_get(struct at_writer *w, struct device_writer **out,
                             struct at_error *err)
{
	int status = writer_attach(w, &device_extension, err);
	if (status)
		return status;
	void **slot = writer_extension_state(w);
	if (!*slot) {
		struct device_writer *dw = calloc(1, sizeof *dw);
		if (!dw)
			return at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
		pthread_mutex_init(&dw->mu, NULL);
		pthread_cond_init(&dw->wake, NULL);
		pthread_cond_init(&dw->room, NULL);
		*slot = dw;
	}
	*out = *slot;
	return AT_OK;
}

/* The retire thread's failure, for the hooks' calls and the checkpoint.
 * Called with mu held. */
static int retire_error(const struct device_writer *dw, struct at_error *err)
{
	if (dw->retire_status && err)
		*err = dw->retire_err;
	return dw->retire_status;
}

/* The oldest batch's rows to the writer: copied to the host once gathered,
 * then handed in.  Called with mu held; releases it while it copies and while
 * the writer takes the rows. */
static void retire_oldest(struct at_writer *w, struct device_writer *dw)
{
	struct sample_batch b = dw->batches[0];
	struct device_point *dp = b.dp;
	int failed = dw->retire_status;
	pthread_mutex_unlock(&dw->mu);
	struct at_error err;
	int status = AT_OK, copied = 0;
	if (!failed && (status = staging_reserve(dw, b.bytes, &err)) == AT_OK) {
		/* queued after the gather on the copy stream: so is the free below */
		status = atc_copy_to_host_wait(dw->staging, b.rows, b.bytes, dw->copy_stream, b.gathered,
		                               &err);
		copied = status == AT_OK;
	} else {
		atc_event_wait(b.gathered, NULL); /* not read, but gathered before it is freed */
	}
	atc_free_async(b.rows, dw->copy_stream);
	if (copied)
		status = writer_add_sampled_rows(w, b.point, dw->staging, b.dtype, b.tokens, b.n,
		                                 b.n_dropped, &err);
	atc_event_free(b.gathered);
	free(b.tokens);
	uint64_t bar_key = 0;
	int64_t bar_token = 0;
	int bar_full = 0;
	if (writer_options(w)->sample_policy == AT_SAMPLE_RESERVOIR) {
		writer_samples_lock(w);
		bar_full = writer_sample_bar(w, b.point, &bar_key, &bar_token);
		writer_samples_unlock(w);
	}
	pthread_mutex_lock(&dw->mu);
	dp->bar_full = bar_full;
	dp->bar_key = bar_key;
	dp->bar_token = bar_token;
	memmove(dw->batches, dw->batches + 1, (dw->n_batches - 1) * sizeof *dw->batches);
	dw->n_batches--;
	dw->bytes_in_flight -= b.bytes;
	if (status && !dw->retire_status) {
		dw->retire_status = status;
		dw->retire_err = err;
	}
	pthread_cond_broadcast(&dw->room);
}

struct retire_start {
	struct at_writer *w;
	struct device_writer *dw;
};

static void *retire_main(void *arg)
{
	struct retire_start start = *(struct retire_start *)arg;
	free(arg);
	struct device_writer *dw = start.dw;
	struct at_error err;
	int status = atc_set_device(dw->device, &err);
	pthread_mutex_lock(&dw->mu);
	if (status) {
		dw->retire_status = status;
		dw->retire_err = err;
	}
	for (;;) {
		while (dw->n_batches == 0 && !dw->stop)
			pthread_cond_wait(&dw->wake, &dw->mu);
		if (dw->stop)
			break;
		retire_oldest(start.w, dw);
	}
	pthread_mutex_unlock(&dw->mu);
	return NULL;
}

static int retire_thread_start(struct at_writer *w, struct device_writer *dw,
                               struct at_error *err)
{
	if (dw->retire_started)
		return AT_OK;
	int status = atc_current_device(&dw->device, err);
	if (status == AT_OK && !dw->pool)
		status = atc_pool_create(&dw->pool, dw->device, err);
	if (status == AT_OK && !dw->copy_stream)
		status = atc_stream_create(&dw->copy_stream, err);
	if (status)
		return status;
	struct retire_start *start = malloc(sizeof *start);
	if (!start)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
	*start = (struct retire_start){w, dw};
	if (pthread_create(&dw->retire_thread, NULL, retire_main, start)) {
		free(start);
		return at_fail(err, AT_ENOMEM, "%s: cannot start the sample thread", writer_path(w));
	}
	dw->retire_started = 1;
	return AT_OK;
}

/* Wait until every queued batch is with the writer. */
static int retire_all(struct device_writer *dw, struct at_error *err)
{
	pthread_mutex_lock(&dw->mu);
	while (dw->n_batches > 0)
		pthread_cond_wait(&dw->room, &dw->mu);
	int status = retire_error(dw, err);
	pthread_mutex_unlock(&dw->mu);
	return status;
}

/* The keys of tokens [base, base + n), from the cache when it holds them. */
static const uint64_t *keys_of(struct at_writer *w, struct device_writer *dw, int64_t base,
                               int64_t n, struct at_error *err)
{
	struct token_keys *k = dw->keys;
	if (!k && !(k = dw->keys = calloc(1, sizeof *k)))
		goto no_memory;
	if (k->key && k->base == base && k->n == n)
		return k->key;
	if (n > k->capacity) {
		uint64_t *grown = realloc(k->key, (size_t)n * sizeof *grown);
		if (!grown)
			goto no_memory;
		k->key = grown;
		k->capacity = n;
	}
	for (int64_t i = 0; i < n; i++)
		k->key[i] = writer_sample_key(w, base + i);
	k->base = base;
	k->n = n;
	return k->key;
no_memory:
	at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
	return NULL;
}

/* What a call's rows are tested against: the policy, and for a reservoir the
 * rows' keys and, when it is full, the bar they must pass. */
struct row_test {
	int policy;
	const uint64_t *keys;
	int full;
	uint64_t bar_key;
	int64_t bar_token;
};

/* Whether the policy takes row g (token `token`) of the call. */
static int row_taken(struct at_writer *w, const struct row_test *rt, int64_t g,
                     int64_t token, int *selected, struct at_error *err)
{
	*selected = 1;
	if (rt->policy == AT_SAMPLE_FIRST)
		return writer_token_selected(w, token, selected, err);
	if (rt->policy == AT_SAMPLE_RESERVOIR && rt->full) {
		*selected = reservoir_before(rt->keys[g], token, rt->bar_key, rt->bar_token);
	}
	return AT_OK;
}

/* The rows of t that the policy takes, as global row indices, and their
 * tokens (the reservoir's by rt's bar). */
static int select_rows(struct at_writer *w, struct device_writer *dw, struct row_test *rt,
                       const struct at_tensor *t, int64_t token_base, int64_t *rows,
                       int64_t *tokens, int64_t capacity, int64_t *n_selected,
                       int64_t *n_beyond, struct at_error *err)
{
	int64_t total = t->batches * t->rows, n = 0, beyond = 0;
	const struct at_writer_options *o = writer_options(w);
	int64_t first = 0, step = 1;
	if (o->sample_policy == AT_SAMPLE_EVERY) {
		int64_t r = token_base % o->sample_n;
		first = r == 0 ? 0 : o->sample_n - r;
		if (r < 0)
			first = -r;
		step = o->sample_n;
	}
	if (rt->policy == AT_SAMPLE_RESERVOIR && rt->full &&
	    !(rt->keys = keys_of(w, dw, token_base, total, err)))
		return AT_ENOMEM;
	for (int64_t g = first; g < total; g += step) {
		int selected;
		int status = row_taken(w, rt, g, token_base + g, &selected, err);
		if (status)
			return status;
		if (!selected)
			continue;
		if (n == capacity) {
			beyond++;
			continue;
		}
		rows[n] = g;
		tokens[n++] = token_base + g;
	}
	*n_selected = n;
	*n_beyond = beyond;
	return AT_OK;
}

/* Wait for old batches until `bytes` more fit in the in-flight bound, and
 * make a place in the queue for one more.  Called with mu held. */
static int make_room(struct at_writer *w, struct device_writer *dw, size_t bytes,
                     struct at_error *err)
{
	size_t limit = device_bytes_in_flight(w);
	while (dw->n_batches > 0 && dw->bytes_in_flight + bytes > limit && !dw->retire_status)
		pthread_cond_wait(&dw->room, &dw->mu);
	int status = retire_error(dw, err);
	if (status == AT_OK && dw->n_batches == dw->batches_capacity) {
		size_t cap = dw->batches_capacity ? 2 * dw->batches_capacity : 64;
		struct sample_batch *grown = realloc(dw->batches, cap * sizeof *grown);
		if (!grown)
			return at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
		dw->batches = grown;
		dw->batches_capacity = cap;
	}
	return status;
}

/* The rows of t the policy takes (their global row indices and tokens), at
 * most the point's room, from the hooks' view of the point's samples (see
 * struct device_point): the writer's lock is taken once a point, so that the
 * hooks never wait for the sample thread's copies. */
static int choose_rows(struct at_writer *w, struct device_writer *dw, int32_t point,
                       struct device_point *dp, const struct at_tensor *t, int64_t token_base,
                       int64_t **rows, int64_t **tokens, int64_t *n, int64_t *dropped,
                       struct at_error *err)
{
	int64_t total = t->batches * t->rows;
	const struct at_writer_options *o = writer_options(w);
	int64_t room = INT64_MAX / 4; /* a reservoir: what it keeps is bounded by k */
	if (o->sample_policy != AT_SAMPLE_RESERVOIR) {
		if (dp->samples_before < 0) {
			writer_samples_lock(w);
			dp->samples_before = o->max_samples - writer_sample_room(w, point);
			writer_samples_unlock(w);
		}
		room = o->max_samples - dp->samples_before - dp->samples_handed;
		room = room > 0 ? room : 0;
	}
	struct row_test rt = {o->sample_policy, NULL, 0, 0, 0};
	pthread_mutex_lock(&dw->mu);
	rt.full = dp->bar_full;
	rt.bar_key = dp->bar_key;
	rt.bar_token = dp->bar_token;
	pthread_mutex_unlock(&dw->mu);
	int64_t capacity = total < room ? total : room;
	*rows = malloc((size_t)(capacity > 0 ? capacity : 1) * sizeof **rows);
	*tokens = malloc((size_t)(capacity > 0 ? capacity : 1) * sizeof **tokens);
	if (!*rows || !*tokens)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", writer_path(w));
	return select_rows(w, dw, &rt, t, token_base, *rows, *tokens, capacity, n, dropped, err);
}

/* Gather the n chosen rows of t on the stream into device memory of the
 * pool: b's rows and event. */
static int queue_gather(struct at_writer *w, struct device_writer *dw, const struct at_tensor *t,
                        const int64_t *rows, int64_t n, void *stream, struct sample_batch *b,
                        struct at_error *err)
{
	b->bytes = (size_t)n * (size_t)t->channels * at_dtype_size(t->dtype);
	pthread_mutex_lock(&dw->mu);
	int status = make_room(w, dw, b->bytes, err);
	pthread_mutex_unlock(&dw->mu);
	if (!status)
		status = atc_pool_alloc(dw->pool, &b->rows, b->bytes, stream, err);
	if (!status)
		status = atc_gather_rows(t, rows, n, b->rows, stream, err);
	if (!status)
		status = atc_event_record(&b->gathered, stream, err);
	if (status) {
		atc_free_async(b->rows, stream); /* after whatever was queued */
		b->rows = NULL;
	}
	return status;
}

static int sample_device(struct at_writer *w, int32_t point, struct device_point *dp,
                         const struct at_tensor *t, int64_t token_base, void *stream,
                         struct at_error *err)
{
	struct device_writer *dw = NULL;
	int status = device_writer_get(w, &dw, err);
	if (status == AT_OK) {
		pthread_mutex_lock(&dw->mu);
		status = retire_error(dw, err);
		pthread_mutex_unlock(&dw->mu);
	}
	int64_t *rows = NULL, *tokens = NULL, n = 0, dropped = 0;
	if (status == AT_OK)
		status = choose_rows(w, dw, point, dp, t, token_base, &rows, &tokens, &n, &dropped, err);
	if (status == AT_OK)
		dp->dropped_unsent += dropped; /* counted with the next batch, or at the checkpoint */
	if (status || n == 0) {
		free(rows);
		free(tokens);
		return status;
	}
	struct sample_batch b;
	memset(&b, 0, sizeof b);
	b.point = point;
	b.dp = dp;
	b.n = n;
	b.n_dropped = dp->dropped_unsent;
	b.dtype = t->dtype;
	b.tokens = tokens;
	status = retire_thread_start(w, dw, err);
	if (status == AT_OK)
		status = queue_gather(w, dw, t, rows, n, stream, &b, err);
	free(rows);
	if (status) {
		free(tokens);
		return status;
	}
	dp->dropped_unsent = 0;
	pthread_mutex_lock(&dw->mu);
	dw->batches[dw->n_batches++] = b; /* make_room left a place */
	dw->bytes_in_flight += b.bytes;
	dp->samples_handed += n;
	pthread_cond_signal(&dw->wake);
	pthread_mutex_unlock(&dw->mu);
	return AT_OK;
}

/* ---------------------------------------------------------------- states */

/* The device writer of a writer whose points have device state (every
 * observation made it). */
static struct device_writer *dw_of(struct at_writer *w)
{
	return *writer_extension_state(w);
}

static int fresh_state(struct at_writer *w, uint64_t *state, struct at_error *err)
{
	struct device_writer *dw = NULL;
	int status = device_writer_get(w, &dw, err);
	if (status == AT_OK)
		*state = ++dw->states_made;
	return status;
}

static void remember(struct device_point *dp, const struct at_tensor *t, int64_t token_base,
                     void *stream, uint64_t state_before)
{
	dp->last.valid = 1;
	dp->last.tensor = *t;
	dp->last.token_base = token_base;
	dp->last.stream = stream;
	dp->last.state_before = state_before;
}

static int same_tensor(const struct at_tensor *a, const struct at_tensor *b)
{
	return a->data == b->data && a->dtype == b->dtype && a->batches == b->batches &&
	       a->rows == b->rows && a->channels == b->channels &&
	       a->batch_stride == b->batch_stride && a->row_stride == b->row_stride &&
	       a->channel_stride == b->channel_stride;
}

/* Whether dp may take source's accumulators for an observation of t: the
 * source's last change was this very call's tensor, rows and stream (queued
 * before on the same stream, so the copy follows it), and dp holds what the
 * source held before it.  Then source's state is exactly dp's after a full
 * observation: the same kernel folds the same bytes into the same bytes. */
static int can_take(const struct device_point *dp, const struct device_point *source,
                    const struct at_tensor *t, int64_t token_base, void *stream)
{
	return source && source != dp && source->last.valid &&
	       source->last.state_before == dp->state && source->last.token_base == token_base &&
	       source->last.stream == stream && same_tensor(&source->last.tensor, t);
}

/* ---------------------------------------------------------------- entry points */

/* The fused reduction of t into the point's device accumulators. */
static int observe_full(struct at_writer *w, struct device_point *dp, const struct at_tensor *t,
                        int64_t token_base, void *stream, struct at_error *err)
{
	uint64_t before = dp->state;
	/* a failed call may have queued some launches: the contents are unknown */
	dp->last.valid = 0;
	int status = fresh_state(w, &dp->state, err);
	if (status == AT_OK)
		status = atc_point_observe(dp->stats, t, token_base, stream, err);
	if (status == AT_OK)
		remember(dp, t, token_base, stream, before);
	return status;
}

/* Source's accumulators, which hold dp's and t's observation, into dp's. */
static int observe_by_copy(struct at_writer *w, struct device_point *dp,
                           const struct device_point *source, const struct at_tensor *t,
                           int64_t token_base, void *stream, struct at_error *err)
{
	uint64_t before = dp->state;
	dp->last.valid = 0;
	int status = fresh_state(w, &dp->state, err);
	if (status == AT_OK)
		status = atc_point_copy(dp->stats, source->stats, stream, err);
	if (status == AT_OK) {
		dp->state = source->state;
		remember(dp, t, token_base, stream, before);
	}
	return status;
}

static int observe_device(struct at_writer *w, int32_t point, int32_t source,
                          const struct at_tensor *t, int64_t token_base, void *stream,
                          struct at_error *err)
{
	int status = check_observe(w, point, t, token_base, err);
	struct device_point *dp = NULL;
	if (!status)
		status = point_state(w, point, &dp, err);
	if (!status)
		status = check_hist_room(w, dp, t->batches * t->rows, err);
	if (status)
		return status;
	const struct device_point *from = source >= 0 ? *writer_point_state(w, source) : NULL;
	if (can_take(dp, from, t, token_base, stream))
		status = observe_by_copy(w, dp, from, t, token_base, stream, err);
	else
		status = observe_full(w, dp, t, token_base, stream, err);
	if (!status && writer_options(w)->sample_policy != AT_SAMPLE_NONE)
		status = sample_device(w, point, dp, t, token_base, stream, err);
	return status;
}

int at_writer_observe_device(struct at_writer *w, int32_t point, const struct at_tensor *t,
                             int64_t token_base, void *cuda_stream, struct at_error *err)
{
	return observe_device(w, point, -1, t, token_base, cuda_stream, err);
}

int at_writer_observe_device_same(struct at_writer *w, int32_t point, int32_t source_point,
                                  const struct at_tensor *t, int64_t token_base,
                                  void *cuda_stream, struct at_error *err)
{
	int status = check_source(w, point, source_point, err);
	if (status)
		return status;
	return observe_device(w, point, source_point, t, token_base, cuda_stream, err);
}

static int device_checkpoint(struct at_writer *w, struct at_error *err)
{
	void **dw = writer_extension_state(w);
	int status = *dw ? retire_all(*dw, err) : AT_OK;
	for (int32_t i = 0; i < writer_point_count(w) && !status; i++) {
		struct device_point *dp = *writer_point_state(w, i);
		if (!dp)
			continue;
		if (dp->dropped_unsent > 0) {
			/* no rows: the dtype is not read */
			status = writer_add_sampled_rows(w, i, NULL, AT_BF16, NULL, 0, dp->dropped_unsent, err);
			dp->dropped_unsent = 0;
			if (status)
				break;
		}
		struct at_stats *s = writer_point_stats(w, i);
		int drains = atc_point_rows_pending(dp->stats) > 0;
		status = atc_point_drain(dp->stats, s, err);
		if (!status)
			dp->host_seen_max = host_seen_max(s);
		if (drains) {
			dp->last.valid = 0;
			/* after a failed drain the contents are unknown: a state of their own */
			dp->state = status ? ++dw_of(w)->states_made : dp->state | STATE_DRAINED;
		}
	}
	return status;
}

static void device_point_free(void *device)
{
	struct device_point *dp = device;
	if (!dp)
		return;
	atc_point_free(dp->stats);
	free(dp);
}

static void device_writer_free(void *device)
{
	struct device_writer *dw = device;
	if (!dw)
		return;
	if (dw->retire_started) {
		pthread_mutex_lock(&dw->mu);
		dw->stop = 1;
		pthread_cond_signal(&dw->wake);
		pthread_mutex_unlock(&dw->mu);
		pthread_join(dw->retire_thread, NULL);
	}
	for (size_t i = 0; i < dw->n_batches; i++) { /* left by a writer freed without a checkpoint */
		struct sample_batch *b = &dw->batches[i];
		atc_event_wait(b->gathered, NULL); /* the gather may still write into rows */
		atc_event_free(b->gathered);
		atc_free_async(b->rows, dw->copy_stream);
		free(b->tokens);
	}
	if (dw->copy_stream) /* the frees are done before the pool goes */
		atc_stream_sync(dw->copy_stream);
	atc_stream_destroy(dw->copy_stream);
	atc_pool_destroy(dw->pool);
	atc_free_pinned(dw->staging);
	if (dw->keys)
		free(dw->keys->key);
	free(dw->keys);
	free(dw->batches);
	pthread_mutex_destroy(&dw->mu);
	pthread_cond_destroy(&dw->wake);
	pthread_cond_destroy(&dw->room);
	free(dw);
}

#endif /* WITH_CUDA */
