// The Espinnet device: frames in (attribute writes or files), a reconstruction on a worker
// thread through espinnet's C++ API, maps out as image attributes with change and
// data-ready events. README.md describes the interface; EspinnetClass.cpp declares it.
#pragma once

#include <tango.h>

#include <espinnet.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "FrameStack.h"

namespace Espinnet_ns {

/// The result maps, in the order of the attributes declared in EspinnetClass.cpp.
enum MapIndex { DX, DY, TRANSMISSION, DARKFIELD, QUALITY, REFRACTION_X, REFRACTION_Y, PHASE, MAP_COUNT };

class Espinnet : public TANGO_BASE_CLASS {
  public:
    // Device properties: the start-up values (README.md lists them with their units). Those
    // also exposed as memorized attributes are overridden by writes to the attributes.
    std::string engine;
    std::string modelPath;
    std::string provider;
    std::string ortLibrary;
    Tango::DevLong window;
    Tango::DevLong maxShift;
    Tango::DevDouble energyKeV;
    Tango::DevDouble distanceM;
    Tango::DevDouble pixelSizeUm;
    Tango::DevDouble magnification;
    Tango::DevDouble qualityLimit;
    Tango::DevDouble alarmShare;
    Tango::DevBoolean autoReconstruct;
    Tango::DevLong maxStackMiB;
    std::vector<std::string> options;

    Espinnet(Tango::DeviceClass *cl, const char *name);
    ~Espinnet() override { delete_device(); }

    void delete_device() override;
    void init_device() override;
    void get_device_property();

    // Attributes, dispatched by the generic attribute classes of EspinnetClass.h.
    void read_map(Tango::Attribute &attr, MapIndex map);
    void read_status(Tango::Attribute &attr);
    void write_frame(Tango::WAttribute &attr, bool reference);
    void read_scalar(Tango::Attribute &attr);
    void write_setting(Tango::WAttribute &attr);

    // Commands; the state checks are in EspinnetStateMachine.cpp.
    void reconstruct();
    void abort();
    void reset();
    void clear_frames();
    void clear_sample_frames();
    bool is_Reconstruct_allowed(const CORBA::Any &any);
    bool is_Reset_allowed(const CORBA::Any &any);

  private:
    using Clock = std::chrono::steady_clock;
    using Options = std::map<std::string, std::string>;
    /// One reconstruction: the stacks it reads (shared with the device until replaced), the
    /// engine options, and its progress (read by `Progress`, cancelled by `Abort`).
    struct Job {
        std::shared_ptr<const FrameStack> reference, sample;
        Options options;
        std::shared_ptr<rust::Box<espinnet::Progress>> progress;
        Clock::time_point started;
    };
    struct Outcome {
        std::unique_ptr<espinnet::Maps> maps;
        std::string provider, error;
        bool cancelled = false;
    };

    Options engine_options() const;
    template <class T> void change_setting(T &member, T value);
    Job next_job(bool take_sample);
    void maybe_start_live();
    void launch(Job job);
    void work(Job job);
    Outcome run(const Job &job);
    bool finish(Outcome &outcome, Job &job);
    void publish(std::unique_ptr<espinnet::Maps> maps, const std::string &provider, double seconds);
    void add_frames(std::shared_ptr<FrameStack> &stack, const float *data, std::size_t frames,
                    std::size_t height, std::size_t width, bool reference);
    void load_stack(const std::string &spec, bool reference);
    void frames_changed();
    void ready_status();

    // Frames being acquired. A running reconstruction holds its own reference to the stacks
    // it reads, so writing to those is refused until it ends (`use_count() > 1`).
    std::shared_ptr<FrameStack> reference_, sample_;

    // The reconstruction on the worker thread. The device's members are touched under the
    // device monitor only (Tango's threads hold it; the worker takes it in `finish`), except
    // `engine_` and `engine_key_`, which only the worker uses.
    std::thread worker_;
    std::atomic<bool> stopping_{false};
    std::shared_ptr<rust::Box<espinnet::Progress>> progress_;
    std::unique_ptr<rust::Box<espinnet::Engine>> engine_;
    std::string engine_key_;

    // The last result, and the values the scalar attributes are read from.
    std::unique_ptr<espinnet::Maps> result_;
    Tango::DevDouble last_duration_s_ = 0, suspect_share_ = 0, progress_read_ = 0;
    Tango::DevLong reference_count_ = 0, sample_count_ = 0, result_count_ = 0;
    std::string provider_in_use_, reference_path_, sample_path_;
    std::map<std::string, Tango::DevString> string_reads_;
};

}  // namespace Espinnet_ns
