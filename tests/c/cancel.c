/* Progress and cancellation: fractions rise to 1; a callback that returns nonzero cancels;
 * and a flag set by another thread, read by the callback, cancels a running call. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct {
    atomic_int reports;
    double last;
    int cancel_after;   /* 0: never */
    atomic_int started; /* set at the first report */
    atomic_int stop;    /* set by another thread */
    int wait_for_stop;  /* the first report waits (up to 60 s) until stop is set */
} watch;

static int on_progress(double fraction, void *user) {
    watch *w = (watch *)user;
    int k = atomic_fetch_add(&w->reports, 1) + 1;
    CHECK(fraction >= w->last && fraction <= 1.0, "fraction %g after %g", fraction, w->last);
    w->last = fraction;
    atomic_store(&w->started, 1);
    for (int i = 0; w->wait_for_stop && !atomic_load(&w->stop) && i < 60000; i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    return (w->cancel_after && k >= w->cancel_after) || atomic_load(&w->stop);
}

typedef struct {
    esp_engine *engine;
    const test_case *c;
    watch *w;
    esp_status status;
} call;

static void *reconstruct(void *arg) {
    call *a = (call *)arg;
    test_maps m = maps_new(a->c->h, a->c->w);
    esp_outputs out = maps_outputs(&m, a->c->h * a->c->w);
    const test_case *c = a->c;
    a->status = esp_engine_reconstruct_with_progress(a->engine, STACK(c->reference, c->n, c->h, c->w, 0),
                                                     STACK(c->sample, c->n, c->h, c->w, 0), &out,
                                                     on_progress, a->w);
    maps_free(&m);
    return NULL;
}

static void engine_kind(const char *const *options, const test_case *c) {
    esp_engine *engine = engine_new(options);
    const char *name = esp_engine_provider(engine);

    watch all = {0};
    call a = {engine, c, &all, ESP_STATUS_PANIC};
    reconstruct(&a);
    CHECK(a.status == ESP_STATUS_OK, "%s: %s", name, esp_last_error());
    CHECK(all.reports >= 3 && all.last == 1.0, "%s: %d reports, last %g", name, all.reports, all.last);

    watch first = {0};
    first.cancel_after = 1;
    a = (call){engine, c, &first, ESP_STATUS_PANIC};
    reconstruct(&a);
    CHECK(a.status == ESP_STATUS_CANCELLED && first.last < 1.0, "%s: %s after %g", name,
          esp_status_str(a.status), first.last);
    CHECK(strcmp(esp_last_error(), "cancelled") == 0, "%s", esp_last_error());

    watch remote = {0};
    remote.wait_for_stop = 1;
    a = (call){engine, c, &remote, ESP_STATUS_PANIC};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, reconstruct, &a) == 0, "pthread_create");
    while (!atomic_load(&remote.started))
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    atomic_store(&remote.stop, 1);
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    CHECK(a.status == ESP_STATUS_CANCELLED && remote.last < 1.0, "%s: cancel from another thread: %s",
          name, esp_status_str(a.status));
    printf("%s: %d progress reports; cancelled from the callback and from another thread\n", name,
           all.reports);
    esp_engine_free(engine);
}

int main(void) {
    test_case c = case_new("mask-diagonal", 160, 160, 6, 2);
    static const char *const tracking[] = {"engine", "tracking", NULL};
    engine_kind(tracking, &c);
    if (test_network()) {
        /* Small tiles: several units of work on a small image. */
        static const char *const network[] = {"provider", "cpu", "tile", "64", "overlap", "16", NULL};
        engine_kind(network, &c);
    }
    case_free(&c);
    puts("cancel: ok");
    return 0;
}
