// The Espinnet device class: its attributes, commands and default properties, laid out as
// Pogo lays out a DeviceClass. The attribute and command classes are generic (one per kind,
// dispatching on the attribute's name) rather than one class per attribute.
#pragma once

#include <tango.h>

#include "Espinnet.h"

namespace Espinnet_ns {

/// Largest frame side accepted, px.
constexpr long kMaxSidePx = 16384;

/// A result map: a read-only float image.
class MapAttrib : public Tango::ImageAttr {
  public:
    MapAttrib(const char *name, MapIndex map)
        : ImageAttr(name, Tango::DEV_FLOAT, Tango::READ, kMaxSidePx, kMaxSidePx), map_(map) {}
    void read(Tango::DeviceImpl *dev, Tango::Attribute &att) override {
        static_cast<Espinnet *>(dev)->read_map(att, map_);
    }

  private:
    MapIndex map_;
};

/// PixelStatus: what happened at each pixel of the result, a read-only byte image.
class StatusAttrib : public Tango::ImageAttr {
  public:
    StatusAttrib() : ImageAttr("PixelStatus", Tango::DEV_UCHAR, Tango::READ, kMaxSidePx, kMaxSidePx) {}
    void read(Tango::DeviceImpl *dev, Tango::Attribute &att) override {
        static_cast<Espinnet *>(dev)->read_status(att);
    }
};

/// ReferenceFrame / SampleFrame: each write appends one frame.
class FrameAttrib : public Tango::ImageAttr {
  public:
    FrameAttrib(const char *name, bool reference)
        : ImageAttr(name, Tango::DEV_FLOAT, Tango::WRITE, kMaxSidePx, kMaxSidePx), reference_(reference) {}
    void write(Tango::DeviceImpl *dev, Tango::WAttribute &att) override {
        static_cast<Espinnet *>(dev)->write_frame(att, reference_);
    }

  private:
    bool reference_;
};

/// A read-only scalar (counts, progress, timing, provider).
class ScalarAttrib : public Tango::Attr {
  public:
    ScalarAttrib(const char *name, long type) : Attr(name, type, Tango::READ) {}
    void read(Tango::DeviceImpl *dev, Tango::Attribute &att) override {
        static_cast<Espinnet *>(dev)->read_scalar(att);
    }
};

/// A setting a user changes between scans: read/write, memorized.
class SettingAttrib : public Tango::Attr {
  public:
    SettingAttrib(const char *name, long type) : Attr(name, type, Tango::READ_WRITE) {}
    void read(Tango::DeviceImpl *dev, Tango::Attribute &att) override {
        static_cast<Espinnet *>(dev)->read_scalar(att);
    }
    void write(Tango::DeviceImpl *dev, Tango::WAttribute &att) override {
        static_cast<Espinnet *>(dev)->write_setting(att);
    }
};

/// A command without argument or result, run on the device by a member function.
class VoidCommand : public Tango::Command {
  public:
    using Run = void (Espinnet::*)();
    using Allowed = bool (Espinnet::*)(const CORBA::Any &);
    VoidCommand(const char *name, const char *description, Run run, Allowed allowed = nullptr)
        : Command(name, Tango::DEV_VOID, Tango::DEV_VOID, description, "", Tango::OPERATOR),
          run_(run), allowed_(allowed) {}
    CORBA::Any *execute(Tango::DeviceImpl *dev, const CORBA::Any &) override {
        (static_cast<Espinnet *>(dev)->*run_)();
        return new CORBA::Any();
    }
    bool is_allowed(Tango::DeviceImpl *dev, const CORBA::Any &any) override {
        return allowed_ == nullptr || (static_cast<Espinnet *>(dev)->*allowed_)(any);
    }

  private:
    Run run_;
    Allowed allowed_;
};

class EspinnetClass : public Tango::DeviceClass {
  public:
    Tango::DbData dev_def_prop;

    static EspinnetClass *init(const char *name);
    static EspinnetClass *instance();
    ~EspinnetClass() override { _instance = nullptr; }
    Tango::DbDatum get_default_device_property(const std::string &name);

  protected:
    explicit EspinnetClass(std::string &name);
    static EspinnetClass *_instance;
    void command_factory() override;
    void attribute_factory(std::vector<Tango::Attr *> &att_list) override;
    void set_default_property();

  private:
    void device_factory(const Tango::DevVarStringArray *devlist_ptr) override;
};

}  // namespace Espinnet_ns
