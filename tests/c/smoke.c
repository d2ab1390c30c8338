/* Compiled against include/espinnet.h and linked with the built libespinnet by tests/capi.rs:
 * the header is valid C, the symbols exist, and the basic contract holds from C. */
#include <espinnet.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#if !ESP_CHECK_VERSION(0, 1, 0)
#error "header version check failed"
#endif

#define H 24
#define W 32

int main(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", ESPINNET_VERSION_MAJOR, ESPINNET_VERSION_MINOR, ESPINNET_VERSION_PATCH);
    if (strcmp(esp_version(), expected) != 0) { fprintf(stderr, "version %s != %s\n", esp_version(), expected); return 1; }

    esp_options *opts = esp_options_new();
    if (esp_options_set(opts, "window", "x") != ESP_STATUS_INVALID_ARGUMENT || strstr(esp_last_error(), "window") == NULL) {
        fprintf(stderr, "bad option value not reported: %s\n", esp_last_error());
        return 1;
    }
    esp_engine *engine = NULL;
    if (esp_engine_new(opts, &engine) != ESP_STATUS_OK) { fprintf(stderr, "%s\n", esp_last_error()); return 1; }
    if (strcmp(esp_engine_provider(engine), "cpu") != 0) { fprintf(stderr, "provider %s\n", esp_engine_provider(engine)); return 1; }
    esp_options_free(opts);
    esp_options_free(NULL);
    esp_status s = esp_engine_reconstruct(engine, NULL, NULL, 1, H, W, 0, NULL);
    if (s != ESP_STATUS_NULL_ARGUMENT) { fprintf(stderr, "expected NULL_ARGUMENT, got %s\n", esp_status_str(s)); return 1; }
    esp_engine_free(engine);

    static float gx[H * W], gy[H * W], phase[H * W];
    for (int i = 0; i < H * W; i++) { gx[i] = 0.5f; gy[i] = -0.25f; }
    if (esp_integrate(gx, gy, H, W, 1, phase) != ESP_STATUS_OK) { fprintf(stderr, "%s\n", esp_last_error()); return 1; }
    if (fabsf(phase[1] - phase[0] - 0.5f) > 1e-4f || fabsf(phase[W] - phase[0] + 0.25f) > 1e-4f) return 1;
    printf("C smoke test passed (espinnet %s)\n", esp_version());
    return 0;
}
