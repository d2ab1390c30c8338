/* A round trip through the installed library: simulate a case with known truth, reconstruct
 * it with both engines, and check the maps against the truth; refraction and phase with the
 * geometry; the version the header and the library report. */
#include "common.h"

static void versions(void) {
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", ESP_VERSION_MAJOR, ESP_VERSION_MINOR,
             ESP_VERSION_PATCH);
    CHECK(strcmp(esp_version(), header) == 0, "library %s, header %s", esp_version(), header);
    CHECK(ESP_CHECK_VERSION(ESP_VERSION_MAJOR, ESP_VERSION_MINOR, 0), "same minor");
    CHECK(!ESP_CHECK_VERSION(ESP_VERSION_MAJOR + 1, 0, 0), "next major");
    printf("espinnet %s\n", esp_version());
    if (test_network()) {
        const char *providers = NULL;
        CHECK_OK(esp_available_providers(NULL, &providers));
        CHECK(strstr(providers, "cpu") != NULL, "providers: %s", providers);
        printf("execution providers: %s\n", providers);
    }
}

/* The paper's set-up (coded mask, diagonal scan, N = 20, shifts up to 8 px). The tracker
 * is held to its issue's targets at N = 20, Nw = 1: no pixel more than 1 px off, RMSE
 * 0.1 px per axis, T 0.02, D 0.05. The network's accuracy is the model's business
 * (tests/network.rs holds it to the model card); here it must only come through the ABI
 * intact: a transposed, swapped or mis-strided map is several px off almost everywhere,
 * so 2 % gross and 0.2 px RMSE separate the two (the shipped model measures 0.74 % and
 * 0.133 px on this case), with the tracker's T and D targets. */
static void accuracy(const test_case *c) {
    static const char *const tracking[] = {"engine", "tracking", "window", "1", "max_shift", "9", NULL};
    esp_engine *engine = engine_new(tracking);
    CHECK(strcmp(esp_engine_provider(engine), "tracking-cpu") == 0, "%s", esp_engine_provider(engine));
    test_maps m = maps_new(c->h, c->w);
    esp_outputs out = maps_outputs(&m, c->h * c->w);
    esp_report report = {(uintptr_t)-1};
    CHECK_OK(esp_engine_run(engine, STACK(c->reference, c->n, c->h, c->w, 0), STACK(c->sample, c->n, c->h, c->w, 0), &out, NULL, NULL, &report));
    CHECK(report.resolved_pixels == 0, "the tracker re-solves nothing: %zu", (size_t)report.resolved_pixels);
    /* The tracker leaves a border of max_shift + window + 2 px as NaN, and only that: its
       status says so, and no pixel is the guard's. */
    size_t border = 9 + 1 + 2;
    for (size_t y = 0; y < c->h; y++)
        for (size_t x = 0; x < c->w; x++) {
            size_t i = y * c->w + x;
            int inside = y >= border && x >= border && y + border < c->h && x + border < c->w;
            CHECK(inside == !isnan(m.dx[i]), "dx at (%zu, %zu) = %g", y, x, m.dx[i]);
            CHECK(inside == (m.status[i] != ESP_PIXEL_NOT_MEASURED) && m.status[i] != ESP_PIXEL_RESOLVED,
                  "status %d at (%zu, %zu)", m.status[i], y, x);
        }
    errors e = errors_of(&m, c, border);
    print_errors("tracking", e);
    CHECK(e.gross == 0 && e.rmse_axis <= 0.1 && e.rmse_t <= 0.02 && e.rmse_d <= 0.05, "tracking accuracy");
    esp_engine_free(engine);

    if (test_network()) {
        static const char *const network[] = {"provider", "cpu", "guard", "true", NULL};
        engine = engine_new(network);
        CHECK(strcmp(esp_engine_provider(engine), "cpu") == 0, "%s", esp_engine_provider(engine));
        report.resolved_pixels = (uintptr_t)-1;
        CHECK_OK(esp_engine_run(engine, STACK(c->reference, c->n, c->h, c->w, 0), STACK(c->sample, c->n, c->h, c->w, 0), &out, NULL, NULL, &report));
        /* The guard re-solves a share of the pixels, never all of them: those of status
           ESP_PIXEL_RESOLVED. */
        CHECK(report.resolved_pixels < c->h * c->w, "re-solved %zu", (size_t)report.resolved_pixels);
        size_t resolved = 0;
        for (size_t i = 0; i < c->h * c->w; i++)
            resolved += m.status[i] == ESP_PIXEL_RESOLVED;
        CHECK(resolved == report.resolved_pixels, "status %zu resolved, report %zu", resolved,
              (size_t)report.resolved_pixels);
        printf("network: the guard re-solved %zu pixel(s)\n", (size_t)report.resolved_pixels);
        /* Every pixel is estimated but those whose pattern comes from beyond the reference's
           field of view (its displacement points out of the image at the edge): NaN there.
           By the truth, with margins for the estimate that judges: 2 px inside (a field
           growing steeply inwards at the edge is read at its value 2 px in), 1 px beyond. */
        for (size_t y = 0; y < c->h; y++)
            for (size_t x = 0; x < c->w; x++) {
                size_t i = y * c->w + x;
                float rx = (float)x - c->dx[i], ry = (float)y - c->dy[i];
                int inside = rx > 2 && ry > 2 && rx < c->w - 3 && ry < c->h - 3;
                int beyond = rx < -1 || ry < -1 || rx > c->w || ry > c->h;
                int finite = isfinite(m.dx[i]) && isfinite(m.darkfield[i]);
                CHECK(finite == (m.status[i] != ESP_PIXEL_NOT_MEASURED), "status %d at (%zu, %zu)",
                      m.status[i], y, x);
                CHECK(!inside || finite, "network output at (%zu, %zu) not finite", y, x);
                CHECK(!beyond || !finite, "network output at (%zu, %zu) beyond the field of view", y, x);
            }
        e = errors_of(&m, c, 10);
        print_errors("network", e);
        CHECK(e.gross <= 0.02 && e.rmse_axis <= 0.2 && e.rmse_t <= 0.02 && e.rmse_d <= 0.05,
              "network maps through the ABI");
        esp_engine_free(engine);
    }
    maps_free(&m);
}

/* A row stride wider than the image: the same maps as the contiguous copy. */
static void strided(const test_case *c) {
    size_t stride = c->w + 7;
    float *r = (float *)xcalloc(c->n * c->h * stride, sizeof(float));
    float *s = (float *)xcalloc(c->n * c->h * stride, sizeof(float));
    for (size_t k = 0; k < c->n * c->h; k++) {
        memcpy(r + k * stride, c->reference + k * c->w, c->w * sizeof(float));
        memcpy(s + k * stride, c->sample + k * c->w, c->w * sizeof(float));
        r[k * stride + c->w] = NAN; /* padding is never read */
    }
    static const char *const tracking[] = {"engine", "tracking", "max_shift", "9", NULL};
    esp_engine *engine = engine_new(tracking);
    test_maps a = maps_new(c->h, c->w), b = maps_new(c->h, c->w);
    esp_outputs oa = maps_outputs(&a, c->h * c->w), ob = maps_outputs(&b, c->h * c->w);
    CHECK_OK(esp_engine_reconstruct(engine, STACK(c->reference, c->n, c->h, c->w, 0), STACK(c->sample, c->n, c->h, c->w, 0), &oa));
    CHECK_OK(esp_engine_reconstruct(engine, STACK(r, c->n, c->h, c->w, stride), STACK(s, c->n, c->h, c->w, stride), &ob));
    CHECK(memcmp(a.dx, b.dx, c->h * c->w * sizeof(float)) == 0, "strided dx differs");
    CHECK(memcmp(a.darkfield, b.darkfield, c->h * c->w * sizeof(float)) == 0, "strided D differs");
    esp_engine_free(engine);
    maps_free(&a); maps_free(&b);
    free(r); free(s);
}

/* Refraction and phase with the preset's geometry (20 keV, 0.5 m, 6.5 um pixels, x10):
 * refraction is d * pixel / distance, and the phase is what esp_integrate makes of the
 * gradient (2 pi / lambda) * refraction * pixel. */
static void geometry(void) {
    test_case c = case_new("lens", 96, 96, 10, 5);
    static const char *const opts[] = {"engine", "tracking", "max_shift", "5", "energy_kev", "20",
                                       "distance_m", "0.5", "pixel_size_um", "6.5",
                                       "magnification", "10", "integration", "least-squares", NULL};
    esp_engine *engine = engine_new(opts);
    size_t len = c.h * c.w;
    float *dx = (float *)xcalloc(len, sizeof(float)), *dy = (float *)xcalloc(len, sizeof(float));
    float *ax = (float *)xcalloc(len, sizeof(float)), *ay = (float *)xcalloc(len, sizeof(float));
    float *phase = (float *)xcalloc(len, sizeof(float)), *again = (float *)xcalloc(len, sizeof(float));
    esp_outputs out = {dx, dy, NULL, NULL, NULL, ax, ay, phase, len, NULL};
    CHECK_OK(esp_engine_reconstruct(engine, STACK(c.reference, c.n, c.h, c.w, 0), STACK(c.sample, c.n, c.h, c.w, 0), &out));
    const double pixel_m = 6.5e-6 / 10, distance_m = 0.5, lambda_m = 1.23984198e-6 / 20e3;
    double per_px = 2 * M_PI / lambda_m * pixel_m; /* rad of phase per px per rad of angle */
    size_t checked = 0;
    for (size_t i = 0; i < len; i++) {
        CHECK(isnan(dx[i]) == isnan(ax[i]), "refraction NaN where dx is not, at %zu", i);
        if (isnan(dx[i]))
            continue;
        double want = dx[i] * pixel_m / distance_m;
        CHECK(fabs(ax[i] - want) <= 1e-6 * fabs(want) + 1e-12, "refraction %g, want %g", ax[i], want);
        ax[i] = (float)(ax[i] * per_px);
        ay[i] = (float)(ay[i] * per_px);
        checked++;
    }
    CHECK(checked > len / 2, "only %zu estimated pixels", checked);
    CHECK_OK(esp_integrate(ax, ay, len, c.h, c.w, "least-squares", again));
    double worst = 0, range = 0;
    for (size_t i = 0; i < len; i++) {
        if (isnan(phase[i]) || isnan(again[i])) {
            CHECK(isnan(phase[i]) && isnan(again[i]), "NaN in one phase only at %zu", i);
            continue;
        }
        worst = fmax(worst, fabs(phase[i] - again[i]));
        range = fmax(range, fabs(phase[i]));
    }
    printf("phase: |phase| up to %.3f rad, differs from esp_integrate by %.2g rad\n", range, worst);
    CHECK(range > 0.1 && worst <= 1e-4 * range, "phase through the engine");
    esp_engine_free(engine);
    free(dx); free(dy); free(ax); free(ay); free(phase); free(again);
    case_free(&c);
}

int main(void) {
    versions();
    test_case c = case_new("mask-diagonal", 256, 256, 20, 11);
    accuracy(&c);
    strided(&c);
    case_free(&c);
    geometry();
    puts("roundtrip: ok");
    return 0;
}
