//! `gatewayctl` binary: everything is in the library (`gatewayctl::main`), so this crate has
//! nothing to compile but the link.

fn main() -> std::process::ExitCode {
    gatewayctl::main()
}
