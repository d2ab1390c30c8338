// EspinnetDS: the device server that hosts Espinnet devices.
//   EspinnetDS INSTANCE                                   (devices from the Tango database)
//   EspinnetDS INSTANCE -nodb -dlist a/b/c -ORBendPoint giop:tcp:127.0.0.1:PORT
#include <tango.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char *argv[]) {
    // ONNX Runtime's telemetry off (a value the user set stays), before any thread starts.
    setenv("ORT_DISABLE_TELEMETRY", "1", 0);
    Tango::Util *tg = nullptr;
    int rc = 0;
    try {
        tg = Tango::Util::init(argc, argv);
        tg->server_init(false);
        std::cout << "Ready to accept request" << std::endl;
        tg->server_run();
    } catch (const std::bad_alloc &) {
        std::cerr << "EspinnetDS: out of memory while starting the devices" << std::endl;
        rc = 1;
    } catch (const CORBA::Exception &e) {
        Tango::Except::print_exception(e);
        std::cerr << "EspinnetDS: could not start" << std::endl;
        rc = 1;
    }
    if (tg != nullptr) tg->server_cleanup();
    return rc;
}
