/* Out of memory is a status, not an abort: sizes no machine has, an address-space limit
 * (RLIMIT_AS) set by the host process, and the memory_limit_mib option. After each refusal
 * the process goes on, and the same call succeeds once memory is there. */
#include "common.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

enum { N = 4, H = 512, W = 512 };

/* The process's mapped address space now (bytes). */
static size_t address_space(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL, "cannot read /proc/self/statm");
    unsigned long pages = 0;
    CHECK(fscanf(f, "%lu", &pages) == 1, "statm");
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* Sets the soft address-space limit to `extra` bytes beyond what is mapped now (0: back to
 * the hard limit). */
static void limit_address_space(size_t extra) {
    struct rlimit r;
    CHECK(getrlimit(RLIMIT_AS, &r) == 0, "getrlimit");
    r.rlim_cur = extra ? address_space() + extra : r.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0, "setrlimit");
}

static void integrate_beyond_any_machine(void) {
    /* 100000 x 100000 gradients: 40 GB per buffer, mapped but never touched. */
    const size_t side = 100000, len = side * side, bytes = len * sizeof(float);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    float *g = mmap(NULL, bytes, PROT_READ, flags, -1, 0);
    float *phase = mmap(NULL, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    CHECK(g != MAP_FAILED && phase != MAP_FAILED, "cannot map 2 x 40 GB of address space");
    CHECK_FAILS(esp_integrate(g, g, len, side, side, NULL, phase), ESP_STATUS_OUT_OF_MEMORY, "integration of 100000x100000");
    CHECK_FAILS(esp_integrate(g, g, len, side, side, "least-squares", phase), ESP_STATUS_OUT_OF_MEMORY, "MiB");
    munmap(g, bytes);
    munmap(phase, bytes);
}

static void engines_within_a_limit(const char *const *options, const char *name) {
    test_case c = case_new("mask-diagonal", H, W, N, 3);
    test_maps m = maps_new(H, W);
    esp_outputs out = maps_outputs(&m, H * W);
    esp_engine *engine = engine_new(options);
    /* 16 MiB more than the process maps now: less than any engine needs at 512². */
    limit_address_space(16u << 20);
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(c.reference, N, H, W, 0), STACK(c.sample, N, H, W, 0), &out), ESP_STATUS_OUT_OF_MEMORY, "out of memory");
    limit_address_space(0);
    CHECK_OK(esp_engine_reconstruct(engine, STACK(c.reference, N, H, W, 0), STACK(c.sample, N, H, W, 0), &out));
    CHECK(strcmp(esp_last_error(), "") == 0, "%s: no stale error after success", name);
    CHECK(isfinite(m.dx[H / 2 * W + W / 2]), "%s: a result after the limit was lifted", name);
    esp_engine_free(engine);
    maps_free(&m);
    case_free(&c);
}

static void memory_limit_option(void) {
    test_case c = case_new("mask-diagonal", H, W, N, 4);
    test_maps m = maps_new(H, W);
    esp_outputs out = maps_outputs(&m, H * W);
    static const char *const limited[] = {"engine", "tracking", "memory_limit_mib", "8", NULL};
    esp_engine *engine = engine_new(limited);
    CHECK_FAILS(esp_engine_reconstruct(engine, STACK(c.reference, N, H, W, 0), STACK(c.sample, N, H, W, 0), &out), ESP_STATUS_OUT_OF_MEMORY, "over the memory limit of 8 MiB");
    esp_engine_free(engine);
    maps_free(&m);
    case_free(&c);
}

int main(void) {
    integrate_beyond_any_machine();
    static const char *const tracking[] = {"engine", "tracking", NULL};
    engines_within_a_limit(tracking, "tracking");
    if (test_network()) {
        static const char *const network[] = {"provider", "cpu", NULL};
        engines_within_a_limit(network, "network");
    }
    memory_limit_option();
    puts("out_of_memory: ok");
    return 0;
}
