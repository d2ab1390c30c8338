// Creates the Espinnet class singleton and stores it in the device server.
#include <tango.h>

#include "EspinnetClass.h"

void Tango::DServer::class_factory() {
    add_class(Espinnet_ns::EspinnetClass::init("Espinnet"));
}
