fn main() {
    std::process::exit(buildcell::cli::main());
}
