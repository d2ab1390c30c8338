/* A CT series through the installed C ABI: a scan of NPY stacks (one per angle) run as two
 * shares into one journal, then finished; the statuses of bad settings and of an output
 * that exists. */
#include "common.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes a float32 [n, h, w] stack as .npy (format 1.0). */
static void write_npy(const char *path, const float *data, size_t n, size_t h, size_t w) {
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu, %zu), }",
                       n, h, w);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    uint16_t header_len = (uint16_t)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fwrite(&header_len, 2, 1, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    CHECK(fwrite(data, sizeof(float), n * h * w, f) == n * h * w, "short write");
    fclose(f);
}

int main(void) {
    const size_t n = 3, h = 48, w = 48, angles = 6;
    char dir[] = "/tmp/espinnet-series-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[1024], projections[512], output[512];
    snprintf(projections, sizeof projections, "%s/projections", dir);
    CHECK(mkdir(projections, 0700) == 0, "mkdir");
    test_case c = case_new("lens", h, w, n, 7);
    snprintf(path, sizeof path, "%s/reference.npy", dir);
    write_npy(path, c.reference, n, h, w);
    for (size_t i = 0; i < angles; i++) {
        char file[600];
        snprintf(file, sizeof file, "%s/p%03zu.npy", projections, i);
        write_npy(file, c.sample, n, h, w);
    }

    esp_series_spec *spec = esp_series_spec_new();
    CHECK(spec != NULL, "esp_series_spec_new");
    CHECK_FAILS(esp_series_spec_set(spec, "nonsense", "1"), ESP_STATUS_INVALID_ARGUMENT,
                "unknown series setting");
    CHECK_FAILS(esp_series_spec_set(spec, "air_columns", "-3"), ESP_STATUS_INVALID_ARGUMENT,
                "air_columns");
    esp_series *scan = NULL;
    CHECK_FAILS(esp_series_open(spec, &scan), ESP_STATUS_INVALID_ARGUMENT, "projections");
    CHECK(scan == NULL, "a failed open leaves NULL");
    CHECK_OK(esp_series_spec_set(spec, "projections", projections));
    CHECK_OK(esp_series_spec_set(spec, "reference", path));
    CHECK_FAILS(esp_series_open(spec, &scan), ESP_STATUS_INVALID_ARGUMENT, "angles");
    CHECK_OK(esp_series_spec_set(spec, "angles", "0:180"));
    CHECK_OK(esp_series_open(spec, &scan));
    esp_series_spec_free(spec);
    size_t dims[4];
    CHECK_OK(esp_series_dims(scan, dims));
    CHECK(dims[0] == angles && dims[1] == n && dims[2] == h && dims[3] == w,
          "dims %zu %zu %zu %zu", dims[0], dims[1], dims[2], dims[3]);

    const char *options[] = {"engine", "tracking", "max_shift", "5", "energy_kev", "20",
                             "distance_m", "0.5", "pixel_size_um", "6.5", "magnification",
                             "10", NULL};
    esp_engine *engine = engine_new(options);
    snprintf(output, sizeof output, "%s/out.h5", dir);
    esp_series_report r;
    /* Two shares into the journal, as two workers would; then the call that finishes. */
    CHECK_OK(esp_series_run(scan, engine, output, 0, 2, 1, 0, NULL, NULL, &r));
    CHECK(r.computed == 2 && r.resumed == 0 && !r.written, "first share: %zu %zu %d",
          r.computed, r.resumed, r.written);
    CHECK_OK(esp_series_run(scan, engine, output, 2, 2, 1, 0, NULL, NULL, &r));
    CHECK(r.computed == 2 && !r.written, "second share");
    CHECK(access(output, F_OK) != 0, "no output before the last call");
    CHECK_OK(esp_series_run(scan, engine, output, 0, SIZE_MAX, 0, 0, NULL, NULL, &r));
    CHECK(r.projections == angles && r.resumed == 4 && r.computed == 2 && r.written == 1,
          "finish: %zu %zu %zu %d", r.projections, r.resumed, r.computed, r.written);
    CHECK(access(output, F_OK) == 0, "the output is written");
    snprintf(path, sizeof path, "%s.journal", output);
    CHECK(access(path, F_OK) != 0, "the journal is removed");
    /* The same run again finds its finished output: nothing to do. */
    CHECK_OK(esp_series_run(scan, engine, output, 0, SIZE_MAX, 0, 0, NULL, NULL, &r));
    CHECK(r.computed == 0 && r.resumed == angles && r.written == 1, "again: %zu %zu %d",
          r.computed, r.resumed, r.written);
    /* Another run's output is not replaced silently. */
    const char *other_options[] = {"engine", "tracking", "max_shift", "4", NULL};
    esp_engine *other = engine_new(other_options);
    CHECK_FAILS(esp_series_run(scan, other, output, 0, SIZE_MAX, 0, 0, NULL, NULL, NULL),
                ESP_STATUS_IO, "exists");
    CHECK_OK(esp_series_run(scan, other, output, 0, SIZE_MAX, 0, 1, NULL, NULL, &r));
    CHECK(r.computed == angles && r.written == 1, "overwrite");
    esp_engine_free(other);
    CHECK_FAILS(esp_series_run(NULL, engine, output, 0, 1, 0, 0, NULL, NULL, NULL),
                ESP_STATUS_NULL_ARGUMENT, "series");

    esp_series_free(scan);
    esp_series_free(NULL);
    esp_engine_free(engine);
    case_free(&c);
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0, "cleanup");
    puts("series: ok");
    return 0;
}
