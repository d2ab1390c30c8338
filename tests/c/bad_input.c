/* The bad-input matrix: every misuse returns its status and a message that names the
 * problem, and nothing aborts the host (a deliberate panic inside comes back as
 * ESP_STATUS_PANIC). */
#include "common.h"

#include <stdint.h>

static const size_t N = 3, H = 48, W = 48;

static void options(void) {
    esp_options *opts = esp_options_new();
    CHECK_FAILS(esp_options_set(NULL, "window", "1"), ESP_STATUS_NULL_ARGUMENT, "'opts'");
    CHECK_FAILS(esp_options_set(opts, NULL, "1"), ESP_STATUS_NULL_ARGUMENT, "'key'");
    CHECK_FAILS(esp_options_set(opts, "window", NULL), ESP_STATUS_NULL_ARGUMENT, "'value'");
    CHECK_FAILS(esp_options_set(opts, "colour", "blue"), ESP_STATUS_INVALID_ARGUMENT, "unknown option 'colour'");
    CHECK_FAILS(esp_options_set(opts, "window", "-1"), ESP_STATUS_INVALID_ARGUMENT, "'window'");
    CHECK_FAILS(esp_options_set(opts, "max_shift", "lots"), ESP_STATUS_INVALID_ARGUMENT, "'max_shift'");
    CHECK_FAILS(esp_options_set(opts, "engine", "magic"), ESP_STATUS_INVALID_ARGUMENT, "network or tracking");
    CHECK_FAILS(esp_options_set(opts, "provider", "warp-drive"), ESP_STATUS_INVALID_ARGUMENT, "provider");
    CHECK_FAILS(esp_options_set(opts, "energy_kev", "-20"), ESP_STATUS_INVALID_ARGUMENT, "energy_kev");
    CHECK_FAILS(esp_options_set(opts, "distance_m", "nan"), ESP_STATUS_INVALID_ARGUMENT, "distance_m");
    CHECK_FAILS(esp_options_set(opts, "dark_field", "maybe"), ESP_STATUS_INVALID_ARGUMENT, "true/false");
    CHECK_FAILS(esp_options_set(opts, "window", "\xff"), ESP_STATUS_INVALID_ARGUMENT, "UTF-8");
    /* A failed call leaves the options as they were; a good one clears the last error. */
    CHECK_OK(esp_options_set(opts, "window", "2"));
    CHECK(esp_last_error()[0] == '\0', "last error after success: %s", esp_last_error());
    esp_options_free(opts);
    esp_options_free(NULL);
    esp_engine_free(NULL);
}

static void engines(void) {
    esp_engine *engine = NULL;
    esp_options *opts = esp_options_new();
    CHECK_FAILS(esp_engine_new(NULL, &engine), ESP_STATUS_NULL_ARGUMENT, "'opts'");
    CHECK_FAILS(esp_engine_new(opts, NULL), ESP_STATUS_NULL_ARGUMENT, "'engine'");
    /* A geometry given in part. */
    CHECK_OK(esp_options_set(opts, "engine", "tracking"));
    CHECK_OK(esp_options_set(opts, "energy_kev", "20"));
    CHECK_FAILS(esp_engine_new(opts, &engine), ESP_STATUS_INVALID_ARGUMENT, "pixel_size_um");
    CHECK(engine == NULL, "no engine on failure");
    engine = (esp_engine *)&engine; /* a stale handle is overwritten with NULL on failure */
    CHECK_FAILS(esp_engine_new(opts, &engine), ESP_STATUS_INVALID_ARGUMENT, "pixel_size_um");
    CHECK(engine == NULL, "no engine on failure");
    esp_options_free(opts);

    if (test_network()) {
        opts = esp_options_new();
        CHECK_OK(esp_options_set(opts, "model", "/nonexistent/model.onnx"));
        CHECK_FAILS(esp_engine_new(opts, &engine), ESP_STATUS_MODEL, "/nonexistent/model.onnx");
        esp_options_free(opts);
        opts = esp_options_new();
        CHECK_OK(esp_options_set(opts, "ort_library", "/nonexistent/libonnxruntime.so"));
        CHECK_FAILS(esp_engine_new(opts, &engine), ESP_STATUS_RUNTIME_LIBRARY, "/nonexistent/libonnxruntime.so");
        esp_options_free(opts);
        CHECK(engine == NULL, "no engine on failure");
    }

    /* A panic inside the library comes back as a status with its message. */
    opts = esp_options_new();
    CHECK_OK(esp_options_set(opts, "debug_panic", "1"));
    CHECK_FAILS(esp_engine_new(opts, &engine), ESP_STATUS_PANIC, "deliberate panic");
    CHECK(engine == NULL, "no engine after a panic");
    esp_options_free(opts);
}

static void reconstruct(void) {
    test_case c = case_new("mask-diagonal", H, W, N, 1);
    static const char *const tracking[] = {"engine", "tracking", "max_shift", "4", NULL};
    esp_engine *engine = engine_new(tracking);
    test_maps m = maps_new(H, W);
    esp_outputs out = maps_outputs(&m, H * W);
    const float *r = c.reference, *s = c.sample;

    /* Wrong call order: an engine that was never made. */
    CHECK_FAILS(esp_engine_reconstruct(NULL, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &out), ESP_STATUS_NULL_ARGUMENT, "'engine'");
    CHECK_FAILS(esp_engine_reconstruct(engine, NULL, STACK(s, N, H, W, 0), &out), ESP_STATUS_NULL_ARGUMENT, "'reference'");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), NULL, &out), ESP_STATUS_NULL_ARGUMENT, "'sample'");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(NULL, N, H, W, 0), STACK(s, N, H, W, 0), &out), ESP_STATUS_NULL_ARGUMENT, "'reference'");
    /* Buffers shorter than their dimensions, misaligned, or outputs too short for an image. */
    esp_stack short_stack = *STACK(r, N, H, W, 0);
    short_stack.len -= 1;
    CHECK_FAILS(esp_engine_reconstruct(engine, &short_stack, STACK(s, N, H, W, 0), &out), ESP_STATUS_INVALID_ARGUMENT, "needs");
    const float *odd = (const float *)((const char *)r + 1);
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(odd, N, H, W, 0), STACK(s, N, H, W, 0), &out), ESP_STATUS_INVALID_ARGUMENT, "aligned");
    esp_outputs short_out = out;
    short_out.len = H * W - 1;
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &short_out), ESP_STATUS_INVALID_ARGUMENT, "'dx' holds");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), NULL), ESP_STATUS_NULL_ARGUMENT, "'out'");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, 0, H, W, 0), STACK(s, 0, H, W, 0), &out), ESP_STATUS_INVALID_ARGUMENT, ">= 1");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, 0, W, 0), STACK(s, N, 0, W, 0), &out), ESP_STATUS_INVALID_ARGUMENT, ">= 1");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, SIZE_MAX / 2, 4, 0), STACK(s, N, SIZE_MAX / 2, 4, 0), &out), ESP_STATUS_INVALID_ARGUMENT, "overflow");
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, W - 1), STACK(s, N, H, W, W - 1), &out), ESP_STATUS_INVALID_ARGUMENT, "row stride");
    /* Refraction and phase without the geometry. */
    float *phase = (float *)xcalloc(H * W, sizeof(float));
    esp_outputs with_phase = out;
    with_phase.phase = phase;
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &with_phase), ESP_STATUS_INVALID_ARGUMENT, "geometry");
    /* Non-finite input, in either stack. */
    float *bad = (float *)xcalloc(N * H * W, sizeof(float));
    memcpy(bad, s, N * H * W * sizeof(float));
    bad[H * W + 5 * W + 7] = NAN;
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(bad, N, H, W, 0), &out), ESP_STATUS_NON_FINITE, "sample");
    bad[H * W + 5 * W + 7] = INFINITY;
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(bad, N, H, W, 0), STACK(s, N, H, W, 0), &out), ESP_STATUS_NON_FINITE, "reference");
    esp_engine_free(engine);

    /* A search larger than the image. */
    static const char *const too_far[] = {"engine", "tracking", "max_shift", "40", NULL};
    engine = engine_new(too_far);
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &out), ESP_STATUS_INVALID_ARGUMENT, "too small");
    esp_engine_free(engine);

    /* The network engine checks the same inputs. */
    if (test_network()) {
        static const char *const network[] = {"provider", "cpu", NULL};
        engine = engine_new(network);
        CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(bad, N, H, W, 0), &out), ESP_STATUS_NON_FINITE, "sample");
        CHECK_FAILS(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &with_phase), ESP_STATUS_INVALID_ARGUMENT, "geometry");
        CHECK_OK(esp_engine_reconstruct(engine, STACK(r, N, H, W, 0), STACK(s, N, H, W, 0), &out));
        esp_engine_free(engine);
    }
    free(bad); free(phase);
    maps_free(&m);
    case_free(&c);
}

static void others(void) {
    float g[16] = {0}, phase[16];
    CHECK_FAILS(esp_integrate(g, g, 16, 4, 4, "magic", phase), ESP_STATUS_INVALID_ARGUMENT, "method");
    CHECK_FAILS(esp_integrate(NULL, g, 16, 4, 4, NULL, phase), ESP_STATUS_NULL_ARGUMENT, "'gx'");
    CHECK_FAILS(esp_integrate(g, g, 16, 4, 4, "least-squares", NULL), ESP_STATUS_NULL_ARGUMENT, "'phase'");
    CHECK_FAILS(esp_integrate(g, g, 16, 0, 4, NULL, phase), ESP_STATUS_INVALID_ARGUMENT, ">= 1");
    CHECK_FAILS(esp_integrate(g, g, 15, 4, 4, NULL, phase), ESP_STATUS_INVALID_ARGUMENT, "holds 15");
    float r[4 * 4 * 2];
    CHECK_FAILS(esp_simulate("moon-dust", 4, 4, 2, 0, r, r, 32, NULL), ESP_STATUS_INVALID_ARGUMENT, "moon-dust");
    CHECK_FAILS(esp_simulate(NULL, 4, 4, 2, 0, r, r, 32, NULL), ESP_STATUS_NULL_ARGUMENT, "'preset'");
    CHECK_FAILS(esp_simulate("lens", 4, 4, 2, 0, NULL, r, 32, NULL), ESP_STATUS_NULL_ARGUMENT, "'reference'");
    CHECK_FAILS(esp_simulate("lens", 4, 4, 2, 0, r, r, 31, NULL), ESP_STATUS_INVALID_ARGUMENT, "holds 31");
    const char *providers = "stale";
    CHECK_FAILS(esp_available_providers(NULL, NULL), ESP_STATUS_NULL_ARGUMENT, "'providers'");
    CHECK_FAILS(esp_available_providers("/nonexistent/libort.so", &providers), ESP_STATUS_RUNTIME_LIBRARY, "/nonexistent/libort.so");
    CHECK(providers == NULL, "no provider list on failure");
    /* Every status has a description, and so has a number no status has. */
    for (int s = ESP_STATUS_OK; s <= ESP_STATUS_PANIC; s++)
        CHECK(esp_status_str((esp_status)s)[0] != '\0', "status %d", s);
    CHECK(strcmp(esp_status_str((esp_status)1000), "unknown status") == 0, "%s", esp_status_str((esp_status)1000));
}

int main(void) {
    options();
    engines();
    reconstruct();
    others();
    puts("bad_input: ok");
    return 0;
}
