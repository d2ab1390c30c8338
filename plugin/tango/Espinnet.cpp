// The Espinnet device. Everything it computes comes from espinnet's C++ API (espinnet.hpp);
// this file only keeps frames, runs the API on a worker thread and publishes its results.
#include "Espinnet.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>

#include "EspinnetClass.h"

namespace Espinnet_ns {

namespace {

const char *const kMapNames[MAP_COUNT] = {"Dx",      "Dy",          "Transmission", "DarkField",
                                          "Quality", "RefractionX", "RefractionY",  "Phase"};

const rust::Vec<float> &map_of(const espinnet::Maps &m, MapIndex map) {
    switch (map) {
        case DX: return m.dx;
        case DY: return m.dy;
        case TRANSMISSION: return m.transmission;
        case DARKFIELD: return m.darkfield;
        case QUALITY: return m.quality;
        case REFRACTION_X: return m.refraction_x;
        case REFRACTION_Y: return m.refraction_y;
        default: return m.phase;
    }
}

[[noreturn]] void fail(const char *reason, const std::string &description, const char *origin) {
    Tango::Except::throw_exception(reason, description, origin);
}

std::string number(double v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
}

std::string shape(std::size_t frames, std::size_t height, std::size_t width) {
    return std::to_string(frames) + " x " + std::to_string(height) + " x " + std::to_string(width);
}

rust::Box<espinnet::Options> make_options(const std::map<std::string, std::string> &options) {
    auto opts = espinnet::options();
    for (const auto &kv : options) opts->set(kv.first, kv.second);
    return opts;
}

/// The geometry is all of energy, distance and pixel size, or none of them (0 = not given).
void check_geometry(double energy_kev, double distance_m, double pixel_um, const char *origin) {
    int given = (energy_kev > 0) + (distance_m > 0) + (pixel_um > 0);
    if (given != 0 && given != 3)
        fail("ESPINNET_Geometry",
             "refraction and phase need all of EnergyKeV, DistanceM and PixelSizeUm; set the missing "
             "ones, or all three to 0 for dx, dy, T and D alone",
             origin);
}

}  // namespace

Espinnet::Espinnet(Tango::DeviceClass *cl, const char *name) : TANGO_BASE_CLASS(cl, name) {
    init_device();
}

void Espinnet::init_device() {
    get_device_property();
    stopping_ = false;
    reference_ = std::make_shared<FrameStack>();
    sample_ = std::make_shared<FrameStack>();
    reference_count_ = sample_count_ = 0;
    try {
        make_options(engine_options());
        check_geometry(energyKeV, distanceM, pixelSizeUm, "Espinnet::init_device");
        if (!(qualityLimit > 0) || !(alarmShare >= 0 && alarmShare <= 1) || maxStackMiB <= 0)
            fail("ESPINNET_Property", "QualityLimit must be > 0, AlarmShare within 0..1, MaxStackMiB > 0",
                 "Espinnet::init_device");
        ready_status();
    } catch (const rust::Error &e) {
        set_state(Tango::FAULT);
        set_status(std::string("bad device property: ") + e.what() + "; fix it and run Init");
    } catch (const Tango::DevFailed &e) {
        set_state(Tango::FAULT);
        set_status(std::string("bad device property: ") + e.errors[0].desc.in() + "; fix it and run Init");
    }
}

void Espinnet::delete_device() {
    // A worker waiting for the monitor (held by whoever calls this) gives up on `stopping_`.
    stopping_ = true;
    if (progress_) (*progress_)->cancel();
    if (worker_.joinable()) worker_.join();
    engine_.reset();
    result_.reset();
    progress_.reset();
}

void Espinnet::get_device_property() {
    const char *names[] = {"Engine",      "ModelPath",     "Provider",     "OrtLibrary",      "Window",
                           "MaxShift",    "EnergyKeV",     "DistanceM",    "PixelSizeUm",     "Magnification",
                           "QualityLimit", "AlarmShare",   "AutoReconstruct", "MaxStackMiB",  "Options"};
    Tango::DbData props;
    for (const char *name : names) props.push_back(Tango::DbDatum(name));
    if (Tango::Util::instance()->_UseDb) get_db_device()->get_property(props);
    auto *cls = static_cast<EspinnetClass *>(get_device_class());
    std::size_t i = 0;
    // The class's default, then the database's value when there is one.
    auto take = [&](auto &value) {
        Tango::DbDatum def = cls->get_default_device_property(props[i].name);
        if (!def.is_empty()) def >> value;
        if (!props[i].is_empty()) props[i] >> value;
        i++;
    };
    take(engine), take(modelPath), take(provider), take(ortLibrary), take(window), take(maxShift);
    take(energyKeV), take(distanceM), take(pixelSizeUm), take(magnification), take(qualityLimit);
    take(alarmShare), take(autoReconstruct), take(maxStackMiB), take(options);
}

Espinnet::Options Espinnet::engine_options() const {
    Options o;
    o["engine"] = engine;
    if (!modelPath.empty()) o["model"] = modelPath;
    if (!provider.empty()) o["provider"] = provider;
    if (!ortLibrary.empty()) o["ort_library"] = ortLibrary;
    o["window"] = std::to_string(window);
    o["max_shift"] = std::to_string(maxShift);
    if (energyKeV > 0 && distanceM > 0 && pixelSizeUm > 0) {
        o["energy_kev"] = number(energyKeV);
        o["distance_m"] = number(distanceM);
        o["pixel_size_um"] = number(pixelSizeUm);
        o["magnification"] = number(magnification);
    }
    for (const auto &opt : options) {
        auto eq = opt.find('=');
        if (eq == std::string::npos)
            fail("ESPINNET_Property", "the Options property takes key=value lines, got '" + opt + "'",
                 "Espinnet::engine_options");
        o[opt.substr(0, eq)] = opt.substr(eq + 1);
    }
    return o;
}

// ---------------------------------------------------------------------------------------
// Attributes

void Espinnet::read_map(Tango::Attribute &attr, MapIndex map) {
    if (!result_ || map_of(*result_, map).empty()) {
        attr.set_quality(Tango::ATTR_INVALID);  // no result yet, or no geometry for this map
        return;
    }
    attr.set_value(const_cast<float *>(map_of(*result_, map).data()), long(result_->width),
                   long(result_->height));
}

void Espinnet::read_status(Tango::Attribute &attr) {
    if (!result_) {
        attr.set_quality(Tango::ATTR_INVALID);  // no result yet
        return;
    }
    attr.set_value(const_cast<std::uint8_t *>(result_->status.data()), long(result_->width),
                   long(result_->height));
}

void Espinnet::read_scalar(Tango::Attribute &attr) {
    const std::string &name = attr.get_name();
    auto text = [&](const std::string &value) {
        Tango::DevString &ptr = string_reads_[name];
        ptr = const_cast<char *>(value.c_str());
        attr.set_value(&ptr);
    };
    if (name == "ReferenceFrames") attr.set_value(&reference_count_);
    else if (name == "SampleFrames") attr.set_value(&sample_count_);
    else if (name == "Progress") {
        progress_read_ = progress_ ? (*progress_)->fraction_done() : 0.0;
        attr.set_value(&progress_read_);
    } else if (name == "LastDurationS") attr.set_value(&last_duration_s_);
    else if (name == "ProviderInUse") text(provider_in_use_);
    else if (name == "SuspectShare") attr.set_value(&suspect_share_);
    else if (name == "ResultCount") attr.set_value(&result_count_);
    else if (name == "Engine") text(engine);
    else if (name == "Window") attr.set_value(&window);
    else if (name == "MaxShift") attr.set_value(&maxShift);
    else if (name == "EnergyKeV") attr.set_value(&energyKeV);
    else if (name == "DistanceM") attr.set_value(&distanceM);
    else if (name == "PixelSizeUm") attr.set_value(&pixelSizeUm);
    else if (name == "Magnification") attr.set_value(&magnification);
    else if (name == "QualityLimit") attr.set_value(&qualityLimit);
    else if (name == "AlarmShare") attr.set_value(&alarmShare);
    else if (name == "AutoReconstruct") attr.set_value(&autoReconstruct);
    else if (name == "ReferencePath") text(reference_path_);
    else if (name == "SamplePath") text(sample_path_);
}

/// Sets an engine setting, keeping the old value when the library refuses the new one.
template <class T> void Espinnet::change_setting(T &member, T value) {
    T old = member;
    member = value;
    try {
        make_options(engine_options());
    } catch (const rust::Error &e) {
        member = old;
        fail("ESPINNET_InvalidValue", e.what(), "Espinnet::write_attribute");
    }
}

void Espinnet::write_setting(Tango::WAttribute &attr) {
    const std::string &name = attr.get_name();
    Tango::DevString s = nullptr;
    Tango::DevLong l = 0;
    Tango::DevDouble d = 0;
    Tango::DevBoolean b = false;
    if (name == "Engine") attr.get_write_value(s), change_setting(engine, std::string(s));
    else if (name == "Window") attr.get_write_value(l), change_setting(window, l);
    else if (name == "MaxShift") attr.get_write_value(l), change_setting(maxShift, l);
    else if (name == "EnergyKeV" || name == "DistanceM" || name == "PixelSizeUm" || name == "Magnification") {
        attr.get_write_value(d);
        if (!(d >= 0) || std::isinf(d) || (name == "Magnification" && !(d > 0)))
            fail("ESPINNET_InvalidValue", name + " must be finite and positive (0 = not given), got " + number(d),
                 "Espinnet::write_attribute");
        Tango::DevDouble &member = name == "EnergyKeV" ? energyKeV
                                   : name == "DistanceM" ? distanceM
                                   : name == "PixelSizeUm" ? pixelSizeUm
                                                           : magnification;
        member = d;
    } else if (name == "QualityLimit") {
        attr.get_write_value(d);
        if (!(d > 0) || std::isinf(d))
            fail("ESPINNET_InvalidValue", "QualityLimit must be finite and > 0, got " + number(d),
                 "Espinnet::write_attribute");
        qualityLimit = d;
    } else if (name == "AlarmShare") {
        attr.get_write_value(d);
        if (!(d >= 0 && d <= 1))
            fail("ESPINNET_InvalidValue", "AlarmShare is a share of pixels, 0 to 1, got " + number(d),
                 "Espinnet::write_attribute");
        alarmShare = d;
    } else if (name == "AutoReconstruct") {
        attr.get_write_value(b);
        autoReconstruct = b;
        maybe_start_live();
    } else if (name == "ReferencePath" || name == "SamplePath") {
        attr.get_write_value(s);
        load_stack(s, name == "ReferencePath");
    }
}

void Espinnet::write_frame(Tango::WAttribute &attr, bool reference) {
    const Tango::DevFloat *data = nullptr;
    attr.get_write_value(data);
    long width = attr.get_w_dim_x(), height = attr.get_w_dim_y();
    if (height <= 0 || width <= 0 || data == nullptr)
        fail("ESPINNET_FrameSize", "a frame is an image of H x W values (got " + std::to_string(width) + " x " +
                                       std::to_string(height) + ")",
             "Espinnet::write_frame");
    add_frames(reference ? reference_ : sample_, data, 1, std::size_t(height), std::size_t(width), reference);
    frames_changed();
    maybe_start_live();
}

/// Appends frames to a stack after checking everything that would make them unusable, so a
/// refused write leaves the stacks as they were.
void Espinnet::add_frames(std::shared_ptr<FrameStack> &stack, const float *data, std::size_t frames,
                          std::size_t height, std::size_t width, bool reference) {
    const char *what = reference ? "reference" : "sample";
    const char *origin = "Espinnet::write_frame";
    if (stack.use_count() > 1)
        fail("ESPINNET_Busy",
             std::string("the ") + what + " stack is being reconstructed: wait for the result, or ClearFrames to "
             "start a new acquisition", origin);
    for (const FrameStack *s : {reference_.get(), sample_.get()})
        if (s->frames() > 0 && (s->height() != height || s->width() != width))
            fail("ESPINNET_FrameSize",
                 "the frame is " + std::to_string(height) + " x " + std::to_string(width) + " (H x W) but the stacks hold " +
                 std::to_string(s->height()) + " x " + std::to_string(s->width()) + " frames: ClearFrames to change the size",
                 origin);
    if (!reference && autoReconstruct && reference_->frames() > 0 && sample_->frames() + frames > reference_->frames())
        fail("ESPINNET_StackComplete",
             "live mode: the sample stack already holds as many frames as the reference (" +
             std::to_string(reference_->frames()) + "); it is reconstructed when the device is ready (state " +
             Tango::DevStateName[get_state()] + ")", origin);
    const std::size_t pixels = height * width, limit = std::size_t(maxStackMiB) << 20;
    if ((stack->size() + frames * pixels) * sizeof(float) > limit)
        fail("ESPINNET_TooLarge",
             std::string("the ") + what + " stack would exceed MaxStackMiB (" + std::to_string(maxStackMiB) +
             " MiB); raise the property or ClearFrames", origin);
    for (std::size_t i = 0; i < frames * pixels; i++)
        if (!std::isfinite(data[i])) {
            std::size_t f = i / pixels, y = i % pixels / width, x = i % width;
            fail("ESPINNET_NonFinite",
                 std::string("the ") + what + " frame " + std::to_string(stack->frames() + f) +
                 " holds a non-finite value at row " + std::to_string(y) + ", column " + std::to_string(x),
                 origin);
        }
    try {
        for (std::size_t f = 0; f < frames; f++) stack->append(data + f * pixels, height, width);
    } catch (const std::bad_alloc &) {
        fail("ESPINNET_OutOfMemory", std::string("out of memory while storing the ") + what + " frames", origin);
    }
}

void Espinnet::load_stack(const std::string &spec, bool reference) {
    espinnet::Stack st;
    try {
        st = espinnet::read_stack(spec);
    } catch (const rust::Error &e) {
        fail("ESPINNET_ReadFailed", e.what(), "Espinnet::load_stack");
    }
    // The file replaces the stack; the checks of add_frames see the other stack only.
    std::shared_ptr<FrameStack> &stack = reference ? reference_ : sample_;
    if (stack.use_count() > 1)
        fail("ESPINNET_Busy", "the stack is being reconstructed: wait for the result", "Espinnet::load_stack");
    std::shared_ptr<FrameStack> old = std::move(stack);
    stack = std::make_shared<FrameStack>();
    try {
        add_frames(stack, st.data.data(), st.n, st.height, st.width, reference);
    } catch (...) {
        stack = std::move(old);
        throw;
    }
    (reference ? reference_path_ : sample_path_) = spec;
    frames_changed();
    maybe_start_live();
}

void Espinnet::frames_changed() {
    reference_count_ = Tango::DevLong(reference_->frames());
    sample_count_ = Tango::DevLong(sample_->frames());
    push_change_event("ReferenceFrames", &reference_count_);
    push_change_event("SampleFrames", &sample_count_);
}

// ---------------------------------------------------------------------------------------
// Commands

void Espinnet::reconstruct() {
    const char *origin = "Espinnet::Reconstruct";
    std::size_t r = reference_->frames(), s = sample_->frames();
    if (r == 0 || s == 0)
        fail("ESPINNET_NoFrames",
             "no frames to reconstruct: the reference stack holds " + std::to_string(r) + " and the sample " +
             std::to_string(s) + "; write ReferenceFrame and SampleFrame (or ReferencePath and SamplePath)",
             origin);
    if (r != s)
        fail("ESPINNET_FrameCount",
             "the reference holds " + std::to_string(r) + " frames and the sample " + std::to_string(s) +
             ": a scan has the same number of positions in both", origin);
    check_geometry(energyKeV, distanceM, pixelSizeUm, origin);
    launch(next_job(false));
}

void Espinnet::abort() {
    if (progress_ && get_state() == Tango::RUNNING) (*progress_)->cancel();
}

void Espinnet::reset() {
    if (get_state() != Tango::FAULT) return;
    ready_status();
    maybe_start_live();
}

void Espinnet::clear_frames() {
    reference_ = std::make_shared<FrameStack>();
    sample_ = std::make_shared<FrameStack>();
    reference_path_.clear();
    sample_path_.clear();
    frames_changed();
}

void Espinnet::clear_sample_frames() {
    sample_ = std::make_shared<FrameStack>();
    sample_path_.clear();
    frames_changed();
}

// ---------------------------------------------------------------------------------------
// The reconstruction

void Espinnet::ready_status() {
    set_state(Tango::ON);
    set_status("Ready: write frames to ReferenceFrame and SampleFrame (or paths to ReferencePath and "
               "SamplePath), then run Reconstruct, or set AutoReconstruct");
}

/// The next reconstruction, with the stacks as they are; in live mode the sample stack is
/// taken, so the next acquisition can start while this one is reconstructed.
Espinnet::Job Espinnet::next_job(bool take_sample) {
    Job job;
    job.reference = reference_;
    job.sample = sample_;
    job.options = engine_options();
    // The network's session is planned for this size's tiles (a third of the start-up);
    // another size makes another engine.
    if (reference_->height() > 0 && reference_->width() > 0)
        job.options["image_px"] = std::to_string(reference_->height()) + "x" + std::to_string(reference_->width());
    job.progress = std::make_shared<rust::Box<espinnet::Progress>>(espinnet::progress());
    job.started = Clock::now();
    progress_ = job.progress;
    if (take_sample) {
        sample_ = std::make_shared<FrameStack>();
        sample_path_.clear();
        frames_changed();
    }
    set_state(Tango::RUNNING);
    set_status("Reconstructing " + shape(job.reference->frames(), job.reference->height(), job.reference->width()) +
               " with the " + engine + " engine");
    return job;
}

void Espinnet::maybe_start_live() {
    Tango::DevState state = get_state();
    if (!autoReconstruct || state == Tango::RUNNING || state == Tango::FAULT) return;
    if (reference_->frames() == 0 || sample_->frames() != reference_->frames()) return;
    launch(next_job(true));
}

void Espinnet::launch(Job job) {
    if (worker_.joinable()) worker_.join();  // the last worker has published and is ending
    worker_ = std::thread(&Espinnet::work, this, std::move(job));
}

void Espinnet::work(Job job) {
    for (;;) {
        Outcome outcome = run(job);
        if (!finish(outcome, job)) return;
    }
}

Espinnet::Outcome Espinnet::run(const Job &job) {
    Outcome out;
    try {
        std::string key;
        for (const auto &kv : job.options) key += kv.first + "=" + kv.second + "\n";
        if (!engine_ || key != engine_key_) {
            engine_.reset();
            engine_ = std::make_unique<rust::Box<espinnet::Engine>>(espinnet::engine(*make_options(job.options)));
            engine_key_ = key;
        }
        const FrameStack &r = *job.reference, &s = *job.sample;
        out.maps = std::make_unique<espinnet::Maps>((*engine_)->reconstruct_with(
            {r.data(), r.size()}, {s.data(), s.size()}, r.frames(), r.height(), r.width(), **job.progress));
        out.provider = std::string((*engine_)->provider());
    } catch (const rust::Error &e) {
        out.error = e.what();
        out.cancelled = (*job.progress)->cancelled();
    } catch (const std::bad_alloc &) {
        out.error = "out of memory";
    } catch (const std::exception &e) {
        out.error = e.what();
    }
    return out;
}

/// Publishes an outcome under the device monitor; returns true with `job` set to the next
/// reconstruction when, in live mode, the next sample stack is already complete.
bool Espinnet::finish(Outcome &out, Job &job) {
    double seconds = std::chrono::duration<double>(Clock::now() - job.started).count();
    while (!stopping_) {
        try {
            Tango::AutoTangoMonitor guard(this);
            if (stopping_) return false;
            job.reference.reset();  // the stacks may be written again
            job.sample.reset();
            if (out.cancelled) {
                set_state(Tango::ON);
                set_status("Aborted after " + number(std::round(seconds * 100) / 100) +
                           " s; the maps are those of the result before");
            } else if (!out.error.empty()) {
                set_state(Tango::FAULT);
                set_status("Reconstruction failed: " + out.error + ". Run Reset to go on.");
            } else {
                publish(std::move(out.maps), out.provider, seconds);
            }
            if (get_state() != Tango::FAULT && autoReconstruct && reference_->frames() > 0 &&
                sample_->frames() == reference_->frames()) {
                job = next_job(true);
                return true;
            }
            return false;
        } catch (const Tango::DevFailed &) {
            // The monitor stayed busy past its timeout (a long request): try again.
        }
    }
    return false;
}

void Espinnet::publish(std::unique_ptr<espinnet::Maps> maps, const std::string &provider, double seconds) {
    const std::size_t n = maps->height * maps->width;
    // Suspect: the tracker's minimum at its search edge or ill-conditioned (status 1, 2),
    // or a residual beyond the limit, among the pixels estimated (status 3 is not: the
    // tracker's border, the network's pixels beyond the field of view). The network's
    // guard's estimates (status 4) are judged by their residual like any other.
    std::size_t considered = 0, suspect = 0;
    for (std::size_t i = 0; i < n; i++) {
        const std::uint8_t s = maps->status[i];  // both engines fill it, h × w
        if (s == 3) continue;
        considered++;
        suspect += s == 1 || s == 2 || !(maps->quality[i] <= qualityLimit);
    }
    suspect_share_ = considered > 0 ? double(suspect) / double(considered) : 1.0;
    last_duration_s_ = seconds;
    provider_in_use_ = provider;
    result_ = std::move(maps);
    result_count_++;

    char summary[256];
    std::snprintf(summary, sizeof summary, "Result %d: %zu x %zu px from %s in %.2f s; %.2f %% of pixels suspect",
                  int(result_count_), result_->height, result_->width, provider.c_str(), seconds,
                  100 * suspect_share_);
    if (suspect_share_ > alarmShare) {
        set_state(Tango::ALARM);
        set_status(std::string(summary) + ", above AlarmShare (" + number(100 * alarmShare) +
                   " %): not converged or Quality > QualityLimit (" + number(qualityLimit) + ")");
    } else {
        set_state(Tango::ON);
        set_status(summary);
    }
    for (int m = 0; m < MAP_COUNT; m++) {
        const rust::Vec<float> &v = map_of(*result_, MapIndex(m));
        if (v.empty()) continue;
        push_change_event(kMapNames[m], const_cast<float *>(v.data()), long(result_->width), long(result_->height));
        push_data_ready_event(kMapNames[m], result_count_);
    }
    push_change_event("PixelStatus", const_cast<std::uint8_t *>(result_->status.data()),
                      long(result_->width), long(result_->height));
    push_data_ready_event("PixelStatus", result_count_);
    push_change_event("ResultCount", &result_count_);
}

}  // namespace Espinnet_ns
