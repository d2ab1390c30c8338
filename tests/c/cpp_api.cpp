// The C++ API (espinnet.hpp, through cxx): the same engines and messages as the C ABI,
// errors as exceptions. Data come from the C ABI's simulator.
#include <espinnet.h>
#include <espinnet.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#define CHECK(cond, what)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__, __LINE__, \
                         #cond, std::string(what).c_str());                            \
            std::exit(1);                                                              \
        }                                                                              \
    } while (0)

// Runs f, which must throw a rust::Error whose message contains needle.
template <class F> static void throws(F f, const char *needle) {
    try {
        f();
    } catch (const rust::Error &e) {
        CHECK(std::strstr(e.what(), needle) != nullptr, e.what());
        return;
    }
    CHECK(false, std::string("no exception containing ") + needle);
}

int main() {
    CHECK(std::string(espinnet::version()) == esp_version(), "C++ and C versions differ");

    const std::size_t n = 20, h = 128, w = 128;
    std::vector<float> ref(n * h * w), smp(n * h * w), tdx(h * w), tdy(h * w);
    esp_outputs truth = {tdx.data(), tdy.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, h * w, nullptr};
    CHECK(esp_simulate("mask-diagonal", h, w, n, 7, ref.data(), smp.data(), ref.size(), &truth) == ESP_STATUS_OK,
          esp_last_error());

    auto opts = espinnet::options();
    throws([&] { opts->set("colour", "blue"); }, "unknown option 'colour'");
    throws([&] { opts->set("window", "-1"); }, "'window'");
    opts->set("engine", "tracking");
    opts->set("max_shift", "9");
    auto engine = espinnet::engine(*opts);
    CHECK(std::string(engine->provider()) == "tracking-cpu", std::string(engine->provider()));

    rust::Slice<const float> r{ref.data(), ref.size()}, s{smp.data(), smp.size()};
    espinnet::Maps m = engine->reconstruct(r, s, n, h, w);
    CHECK(m.height == h && m.width == w && m.dx.size() == h * w && m.quality.size() == h * w, "shape");
    CHECK(m.phase.empty(), "no phase without the geometry");
    // The tracker's N = 20, Nw = 1 targets (as in roundtrip.c) over its estimated interior.
    std::size_t border = 12, gross = 0, count = 0;
    double sum = 0;
    for (std::size_t y = border; y + border < h; y++)
        for (std::size_t x = border; x + border < w; x++) {
            std::size_t i = y * w + x;
            double ex = m.dx[i] - tdx[i], ey = m.dy[i] - tdy[i];
            gross += !(std::hypot(ex, ey) <= 1.0);
            sum += ex * ex + ey * ey;
            count++;
        }
    double rmse = std::sqrt(sum / (2.0 * count));
    std::printf("C++ tracking: RMSE %.4f px/axis, %zu pixels > 1 px off\n", rmse, gross);
    CHECK(gross == 0 && rmse <= 0.1, "accuracy");
    // The tracker's status: NaN exactly on the border it could not search (3).
    CHECK(m.status.size() == h * w, "status size");
    for (std::size_t i = 0; i < h * w; i++)
        CHECK((m.status[i] == 3) == std::isnan(m.dx[i]) && m.status[i] <= 3, std::to_string(i));
    CHECK(m.status[0] == 3 && m.status[(h / 2) * w + w / 2] == 0, "border and centre status");

    // read_stack: a .npy written here comes back as it was; a missing file throws.
    {
        std::string path = "/tmp/espinnet_cpp_api_" + std::to_string(getpid()) + ".npy";
        std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }";
        header.resize(117, ' ');
        header += '\n';
        std::FILE *f = std::fopen(path.c_str(), "wb");
        CHECK(f != nullptr, path);
        std::fwrite("\x93NUMPY\x01\x00\x76\x00", 1, 10, f);
        std::fwrite(header.data(), 1, header.size(), f);
        std::fwrite(ref.data(), sizeof(float), 24, f);
        std::fclose(f);
        espinnet::Stack st = espinnet::read_stack(path);
        std::remove(path.c_str());
        CHECK(st.n == 2 && st.height == 3 && st.width == 4 && st.data.size() == 24, "npy shape");
        CHECK(std::memcmp(st.data.data(), ref.data(), 24 * sizeof(float)) == 0, "npy values");
        throws([&] { espinnet::read_stack(path); }, "no such file");
    }

    // Progress reaches 1; a cancelled call throws (cancel() may come from any thread).
    auto job = espinnet::progress();
    engine->reconstruct_with(r, s, n, h, w, *job);
    CHECK(job->fraction_done() == 1.0 && !job->cancelled(), std::to_string(job->fraction_done()));
    auto stop = espinnet::progress();
    stop->cancel();
    throws([&] { engine->reconstruct_with(r, s, n, h, w, *stop); }, "cancelled");
    CHECK(stop->fraction_done() < 1.0, std::to_string(stop->fraction_done()));

    // Bad input throws with the C ABI's message.
    throws([&] { engine->reconstruct({ref.data(), ref.size() - 1}, s, n, h, w); }, "reference holds");
    throws([&] { engine->reconstruct(r, s, n, 0, w); }, ">= 1");
    std::vector<float> bad(smp);
    bad[17] = NAN;
    throws([&] { engine->reconstruct(r, {bad.data(), bad.size()}, n, h, w); }, "sample");
    auto panicky = espinnet::options();
    panicky->set("debug_panic", "true");
    throws([&] { espinnet::engine(*panicky); }, "deliberate panic");

    std::puts("cpp_api: ok");
    return 0;
}
