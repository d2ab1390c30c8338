/* Helpers shared by the C consumer tests: checks that fail loudly, simulated cases with
 * their truth, engines from key/value lists, and error measures against the truth. */
#ifndef ESPINNET_TEST_COMMON_H
#define ESPINNET_TEST_COMMON_H

#include <espinnet.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n  ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define CHECK_OK(call)                                                                  \
    do {                                                                                \
        esp_status s_ = (call);                                                         \
        CHECK(s_ == ESP_STATUS_OK, "%s: %s: %s", #call, esp_status_str(s_), esp_last_error()); \
    } while (0)

/* A call that must fail with `status` and a message containing `needle`. */
#define CHECK_FAILS(call, status, needle)                                               \
    do {                                                                                \
        esp_status s_ = (call);                                                         \
        CHECK(s_ == (status), "%s returned %s (%s), expected %s", #call,               \
              esp_status_str(s_), esp_last_error(), esp_status_str(status));          \
        CHECK(strstr(esp_last_error(), (needle)) != NULL,                               \
              "%s: message \"%s\" lacks \"%s\"", #call, esp_last_error(), (needle));    \
    } while (0)

/* A descriptor of a stack of n frames of h x w floats, rows `stride` floats apart (0 =
 * w), whose buffer holds exactly what the dimensions need. */
#define STACK(data, n, h, w, stride) \
    (&(esp_stack){(data), (n) * (h) * ((stride) ? (stride) : (w)), (n), (h), (w), (stride)})

static inline void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count, size);
    CHECK(p != NULL, "out of memory");
    return p;
}

/* A simulated case: stacks of n frames of h x w, and the truth. */
typedef struct {
    size_t n, h, w;
    float *reference, *sample;
    float *dx, *dy, *transmission, *darkfield, *phase;
} test_case;

static inline test_case case_new(const char *preset, size_t h, size_t w, size_t n, uint64_t seed) {
    test_case c = {n, h, w, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    c.reference = (float *)xcalloc(n * h * w, sizeof(float));
    c.sample = (float *)xcalloc(n * h * w, sizeof(float));
    c.dx = (float *)xcalloc(h * w, sizeof(float));
    c.dy = (float *)xcalloc(h * w, sizeof(float));
    c.transmission = (float *)xcalloc(h * w, sizeof(float));
    c.darkfield = (float *)xcalloc(h * w, sizeof(float));
    c.phase = (float *)xcalloc(h * w, sizeof(float));
    esp_outputs truth = {c.dx, c.dy, c.transmission, c.darkfield, NULL, NULL, NULL, c.phase, h * w, NULL};
    CHECK_OK(esp_simulate(preset, h, w, n, seed, c.reference, c.sample, n * h * w, &truth));
    return c;
}

static inline void case_free(test_case *c) {
    free(c->reference); free(c->sample);
    free(c->dx); free(c->dy); free(c->transmission); free(c->darkfield); free(c->phase);
}

/* Output maps for an h x w image, all requested except refraction and phase. */
typedef struct {
    float *dx, *dy, *transmission, *darkfield, *quality;
    uint8_t *status;
} test_maps;

static inline test_maps maps_new(size_t h, size_t w) {
    test_maps m;
    m.dx = (float *)xcalloc(h * w, sizeof(float));
    m.dy = (float *)xcalloc(h * w, sizeof(float));
    m.transmission = (float *)xcalloc(h * w, sizeof(float));
    m.darkfield = (float *)xcalloc(h * w, sizeof(float));
    m.quality = (float *)xcalloc(h * w, sizeof(float));
    m.status = (uint8_t *)xcalloc(h * w, 1);
    return m;
}

static inline esp_outputs maps_outputs(const test_maps *m, size_t len) {
    esp_outputs out = {m->dx, m->dy, m->transmission, m->darkfield, m->quality, NULL, NULL, NULL, len, m->status};
    return out;
}

static inline void maps_free(test_maps *m) {
    free(m->dx); free(m->dy); free(m->transmission); free(m->darkfield); free(m->quality);
    free(m->status);
}

/* An engine from NULL-terminated key, value pairs. */
static inline esp_engine *engine_new(const char *const *options) {
    esp_options *opts = esp_options_new();
    CHECK(opts != NULL, "esp_options_new returned NULL");
    for (; options && options[0]; options += 2)
        CHECK_OK(esp_options_set(opts, options[0], options[1]));
    esp_engine *engine = NULL;
    CHECK_OK(esp_engine_new(opts, &engine));
    esp_options_free(opts);
    CHECK(engine != NULL, "esp_engine_new gave OK and no engine");
    return engine;
}

/* Errors of an estimate against the truth over the interior (a border of `border` px left
 * out): share of pixels more than 1 px off (NaN counts as off), and over the finite
 * estimates the RMSE of dx and dy per axis (px) and of T and D. */
typedef struct {
    double rmse_axis, gross, rmse_t, rmse_d;
} errors;

static inline errors errors_of(const test_maps *m, const test_case *c, size_t border) {
    double sd = 0, st = 0, sdf = 0;
    size_t count = 0, gross = 0, finite = 0;
    for (size_t y = border; y + border < c->h; y++)
        for (size_t x = border; x + border < c->w; x++) {
            size_t i = y * c->w + x;
            double ex = m->dx[i] - c->dx[i], ey = m->dy[i] - c->dy[i];
            count++;
            if (!(hypot(ex, ey) <= 1.0))
                gross++;
            if (isnan(ex) || isnan(ey))
                continue;
            finite++;
            sd += ex * ex + ey * ey;
            st += pow(m->transmission[i] - c->transmission[i], 2);
            sdf += pow(m->darkfield[i] - c->darkfield[i], 2);
        }
    errors e = {sqrt(sd / (2.0 * finite)), (double)gross / count, sqrt(st / finite),
                sqrt(sdf / finite)};
    return e;
}

static inline void print_errors(const char *what, errors e) {
    printf("%s: RMSE %.4f px/axis, %.3f %% > 1 px, RMSE(T) %.4f, RMSE(D) %.4f\n", what,
           e.rmse_axis, 100.0 * e.gross, e.rmse_t, e.rmse_d);
}

/* Whether the network engine is to be tested: ESPINNET_TEST_ENGINES unset or naming it
 * (the valgrind runs test the tracker alone: ONNX Runtime is too slow under valgrind). */
static inline int test_network(void) {
    const char *e = getenv("ESPINNET_TEST_ENGINES");
    return e == NULL || strstr(e, "network") != NULL;
}

#endif
