// The Espinnet device class: attributes (with units and descriptions), commands and the
// default values of the device properties.
#include "EspinnetClass.h"

namespace Espinnet_ns {

EspinnetClass *EspinnetClass::_instance = nullptr;

EspinnetClass::EspinnetClass(std::string &name) : Tango::DeviceClass(name) {
    set_default_property();
}

EspinnetClass *EspinnetClass::init(const char *name) {
    if (_instance == nullptr) {
        std::string s(name);
        _instance = new EspinnetClass(s);
    }
    return _instance;
}

EspinnetClass *EspinnetClass::instance() {
    if (_instance == nullptr) {
        std::cerr << "EspinnetClass is not initialised" << std::endl;
        exit(-1);
    }
    return _instance;
}

Tango::DbDatum EspinnetClass::get_default_device_property(const std::string &name) {
    for (const auto &prop : dev_def_prop)
        if (prop.name == name) return prop;
    return Tango::DbDatum(name);
}

namespace {
template <class T> void default_property(Tango::DbData &props, const char *name, T value) {
    Tango::DbDatum datum(name);
    datum << value;
    props.push_back(datum);
}

struct Description {
    const char *label, *unit, *text;
};

template <class A> A *described(A *attr, Description d, bool memorized = false) {
    Tango::UserDefaultAttrProp prop;
    prop.set_label(d.label);
    prop.set_description(d.text);
    if (*d.unit != '\0') prop.set_unit(d.unit);
    attr->set_default_properties(prop);
    attr->set_disp_level(Tango::OPERATOR);
    if (memorized) {
        attr->set_memorized();
        attr->set_memorized_init(true);
    }
    return attr;
}
}  // namespace

void EspinnetClass::set_default_property() {
    Tango::DbData &p = dev_def_prop;
    default_property(p, "Engine", std::string("network"));
    default_property(p, "ModelPath", std::string(""));
    default_property(p, "Provider", std::string("auto"));
    default_property(p, "OrtLibrary", std::string(""));
    default_property(p, "Window", Tango::DevLong(1));
    default_property(p, "MaxShift", Tango::DevLong(8));
    default_property(p, "EnergyKeV", 0.0);
    default_property(p, "DistanceM", 0.0);
    default_property(p, "PixelSizeUm", 0.0);
    default_property(p, "Magnification", 1.0);
    default_property(p, "QualityLimit", 0.25);
    default_property(p, "AlarmShare", 0.05);
    default_property(p, "AutoReconstruct", false);
    default_property(p, "MaxStackMiB", Tango::DevLong(4096));
    default_property(p, "Options", std::vector<std::string>());
}

void EspinnetClass::attribute_factory(std::vector<Tango::Attr *> &att_list) {
    // The maps: change and data-ready events are pushed by the device when a result lands.
    const struct {
        const char *name;
        MapIndex map;
        Description d;
    } maps[] = {
        {"Dx", DX, {"dx", "px", "Pattern displacement along x (columns), px; NaN where not estimated"}},
        {"Dy", DY, {"dy", "px", "Pattern displacement along y (rows), px; NaN where not estimated"}},
        {"Transmission", TRANSMISSION, {"transmission", "", "Transmission (1 = transparent)"}},
        {"DarkField", DARKFIELD, {"dark-field", "", "Dark-field, visibility ratio (1 = no small-angle scattering)"}},
        {"Quality", QUALITY, {"quality", "", "Relative RMS residual of the signal model (0 = perfect fit)"}},
        {"RefractionX", REFRACTION_X, {"refraction x", "rad", "Refraction angle along x, rad; needs EnergyKeV, DistanceM, PixelSizeUm"}},
        {"RefractionY", REFRACTION_Y, {"refraction y", "rad", "Refraction angle along y, rad; needs EnergyKeV, DistanceM, PixelSizeUm"}},
        {"Phase", PHASE, {"phase", "rad", "Phase, rad, zero mean; needs EnergyKeV, DistanceM, PixelSizeUm"}},
    };
    for (const auto &m : maps) {
        auto *attr = described(new MapAttrib(m.name, m.map), m.d);
        attr->set_change_event(true, false);
        attr->set_data_ready_event(true);
        att_list.push_back(attr);
    }

    auto *status = described(new StatusAttrib(),
        {"pixel status", "", "What happened at each pixel: 0 measured, 1 the tracker's minimum at its search edge, "
                             "2 ill-conditioned, 3 not measured (NaN in every map), 4 solved again by the network's guard"});
    status->set_change_event(true, false);
    status->set_data_ready_event(true);
    att_list.push_back(status);

    att_list.push_back(described(new FrameAttrib("ReferenceFrame", true),
        {"reference frame", "", "Write one H x W frame of the reference scan (no sample): it is appended"}));
    att_list.push_back(described(new FrameAttrib("SampleFrame", false),
        {"sample frame", "", "Write one H x W frame of the sample scan: it is appended"}));

    const struct {
        const char *name;
        long type;
        Description d;
        bool events;
    } scalars[] = {
        {"ReferenceFrames", Tango::DEV_LONG, {"reference frames", "", "Frames in the reference stack"}, true},
        {"SampleFrames", Tango::DEV_LONG, {"sample frames", "", "Frames in the sample stack"}, true},
        {"Progress", Tango::DEV_DOUBLE, {"progress", "", "Fraction of the running reconstruction done, 0 to 1"}, false},
        {"LastDurationS", Tango::DEV_DOUBLE, {"last duration", "s", "Duration of the last reconstruction, s"}, false},
        {"ProviderInUse", Tango::DEV_STRING, {"provider", "", "Engine provider of the last result: tracking-cpu, cpu, cuda or tensorrt"}, false},
        {"SuspectShare", Tango::DEV_DOUBLE, {"suspect share", "", "Share of estimated pixels of the last result that are not converged or whose Quality exceeds QualityLimit"}, false},
        {"ResultCount", Tango::DEV_LONG, {"results", "", "Results produced since start-up (the data-ready counter)"}, true},
    };
    for (const auto &s : scalars) {
        auto *attr = described(new ScalarAttrib(s.name, s.type), s.d);
        if (s.events) attr->set_change_event(true, false);
        att_list.push_back(attr);
    }

    const struct {
        const char *name;
        long type;
        Description d;
        bool memorized;
    } settings[] = {
        {"Engine", Tango::DEV_STRING, {"engine", "", "network or tracking"}, true},
        {"Window", Tango::DEV_LONG, {"window", "px", "Tracking: half-width of the matching window, px"}, true},
        {"MaxShift", Tango::DEV_LONG, {"max shift", "px", "Tracking: largest displacement searched, px"}, true},
        {"EnergyKeV", Tango::DEV_DOUBLE, {"energy", "keV", "Photon energy, keV (0: no refraction or phase)"}, true},
        {"DistanceM", Tango::DEV_DOUBLE, {"distance", "m", "Sample-to-detector distance, m (0: no refraction or phase)"}, true},
        {"PixelSizeUm", Tango::DEV_DOUBLE, {"pixel size", "um", "Detector pixel size, um (0: no refraction or phase)"}, true},
        {"Magnification", Tango::DEV_DOUBLE, {"magnification", "", "Optical magnification (effective pixel = PixelSizeUm / Magnification)"}, true},
        {"QualityLimit", Tango::DEV_DOUBLE, {"quality limit", "", "Quality above which a pixel is suspect"}, true},
        {"AlarmShare", Tango::DEV_DOUBLE, {"alarm share", "", "Share of suspect pixels above which the state is ALARM"}, true},
        {"AutoReconstruct", Tango::DEV_BOOLEAN, {"live mode", "", "Reconstruct as soon as the sample stack has as many frames as the reference"}, true},
        {"ReferencePath", Tango::DEV_STRING, {"reference file", "", "Write a path (multi-page TIFF, .npy or file.h5:/dataset) to load the reference stack from it"}, false},
        {"SamplePath", Tango::DEV_STRING, {"sample file", "", "Write a path (multi-page TIFF, .npy or file.h5:/dataset) to load the sample stack from it"}, false},
    };
    for (const auto &s : settings)
        att_list.push_back(described(new SettingAttrib(s.name, s.type), s.d, s.memorized));
}

void EspinnetClass::command_factory() {
    command_list.push_back(new VoidCommand("Reconstruct",
        "Start a reconstruction of the stacks; returns at once (state RUNNING until it ends)",
        &Espinnet::reconstruct, &Espinnet::is_Reconstruct_allowed));
    command_list.push_back(new VoidCommand("Abort", "Cancel the running reconstruction (no-op when none runs)",
        &Espinnet::abort));
    command_list.push_back(new VoidCommand("Reset", "Acknowledge a fault: FAULT -> ON",
        &Espinnet::reset, &Espinnet::is_Reset_allowed));
    command_list.push_back(new VoidCommand("ClearFrames", "Empty the reference and sample stacks",
        &Espinnet::clear_frames));
    command_list.push_back(new VoidCommand("ClearSampleFrames", "Empty the sample stack, keeping the reference",
        &Espinnet::clear_sample_frames));
}

void EspinnetClass::device_factory(const Tango::DevVarStringArray *devlist_ptr) {
    for (unsigned long i = 0; i < devlist_ptr->length(); i++)
        device_list.push_back(new Espinnet(this, (*devlist_ptr)[i]));
    for (unsigned long i = 1; i <= devlist_ptr->length(); i++) {
        auto *dev = static_cast<Espinnet *>(device_list[device_list.size() - i]);
        if (Tango::Util::_UseDb && !Tango::Util::_FileDb)
            export_device(dev);
        else
            export_device(dev, dev->get_name().c_str());
    }
}

}  // namespace Espinnet_ns
