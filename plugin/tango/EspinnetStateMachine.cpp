// Which commands each state allows. A refusal is a DevFailed with a reason a client can
// act on, rather than Tango's generic "command not allowed".
#include "Espinnet.h"

namespace Espinnet_ns {

bool Espinnet::is_Reconstruct_allowed(const CORBA::Any &) {
    if (get_state() == Tango::RUNNING)
        Tango::Except::throw_exception("ESPINNET_Busy",
            "a reconstruction is running: wait for ON (or ALARM), or call Abort", "Espinnet::Reconstruct");
    if (get_state() == Tango::FAULT)
        Tango::Except::throw_exception("ESPINNET_Fault",
            "the device is in FAULT (see Status): call Reset first", "Espinnet::Reconstruct");
    return true;
}

bool Espinnet::is_Reset_allowed(const CORBA::Any &) {
    if (get_state() == Tango::RUNNING)
        Tango::Except::throw_exception("ESPINNET_Busy",
            "a reconstruction is running: Reset acknowledges a fault; use Abort to stop it", "Espinnet::Reset");
    return true;
}

}  // namespace Espinnet_ns
