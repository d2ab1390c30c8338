/* Eight threads share one engine (each engine kind in turn) and get the same maps, bit for
 * bit, as one thread alone; errors stay on the thread that made them. */
#include "common.h"

#include <pthread.h>

#define THREADS 8

typedef struct {
    esp_engine *engine;
    const test_case *c;
    float *dx;
    esp_status status;
    char message[256];
} job;

static void *run(void *arg) {
    job *j = (job *)arg;
    const test_case *c = j->c;
    esp_outputs out = {j->dx, NULL, NULL, NULL, NULL, NULL, NULL, NULL, c->h * c->w, NULL};
    j->status = esp_engine_reconstruct(j->engine, STACK(c->reference, c->n, c->h, c->w, 0),
                                       STACK(c->sample, c->n, c->h, c->w, 0), &out);
    snprintf(j->message, sizeof j->message, "%s", esp_last_error());
    return NULL;
}

static void *fail(void *arg) {
    (void)arg;
    esp_options *opts = esp_options_new();
    esp_status s = esp_options_set(opts, "colour", "blue");
    esp_options_free(opts);
    return (void *)(size_t)(s == ESP_STATUS_INVALID_ARGUMENT && strstr(esp_last_error(), "colour"));
}

static void shared(const char *const *options, const test_case *c) {
    esp_engine *engine = engine_new(options);
    size_t len = c->h * c->w;
    float *alone = (float *)xcalloc(len, sizeof(float));
    esp_outputs out = {alone, NULL, NULL, NULL, NULL, NULL, NULL, NULL, len, NULL};
    CHECK_OK(esp_engine_reconstruct(engine, STACK(c->reference, c->n, c->h, c->w, 0),
                                    STACK(c->sample, c->n, c->h, c->w, 0), &out));
    job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){engine, c, (float *)xcalloc(len, sizeof(float)), ESP_STATUS_PANIC, ""};
        CHECK(pthread_create(&threads[i], NULL, run, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0, "pthread_join");
        CHECK(jobs[i].status == ESP_STATUS_OK, "thread %d: %s", i, jobs[i].message);
        CHECK(memcmp(jobs[i].dx, alone, len * sizeof(float)) == 0, "thread %d differs", i);
        free(jobs[i].dx);
    }
    printf("%s: %d threads agree with one\n", esp_engine_provider(engine), THREADS);
    esp_engine_free(engine);
    free(alone);
}

int main(void) {
    test_case c = case_new("mask-diagonal", 96, 96, 10, 3);
    static const char *const tracking[] = {"engine", "tracking", "max_shift", "9", NULL};
    shared(tracking, &c);
    if (test_network()) {
        static const char *const network[] = {"provider", "cpu", NULL};
        shared(network, &c);
    }
    /* A failure on another thread leaves this thread's last error alone. */
    CHECK_OK(esp_integrate(c.dx, c.dy, c.h * c.w, c.h, c.w, NULL, c.phase));
    pthread_t t;
    void *ok = NULL;
    CHECK(pthread_create(&t, NULL, fail, NULL) == 0 && pthread_join(t, &ok) == 0, "thread");
    CHECK(ok != NULL, "the other thread saw its own error");
    CHECK(esp_last_error()[0] == '\0', "last error leaked across threads: %s", esp_last_error());
    case_free(&c);
    puts("threads: ok");
    return 0;
}
