//! Gives the shared library its SONAME (`libespinnet.so.ABI`, what the CMake package
//! installs: ABI is MAJOR, or 0.MINOR before 1.0, where a minor release may break the ABI) and, with the `cpp` feature, compiles the C++ side of the cxx bridge. The C
//! header is generated separately (cbindgen, committed, checked by `tests/capi.rs`).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let abi = match env!("CARGO_PKG_VERSION_MAJOR") {
            "0" => concat!("0.", env!("CARGO_PKG_VERSION_MINOR")),
            major => major,
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libespinnet.so.{abi}");
    }
    #[cfg(feature = "cpp")]
    {
        cxx_build::bridge("src/cpp.rs")
            .std("c++17")
            .compile("espinnet-cxx");
        println!("cargo:rerun-if-changed=src/cpp.rs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
