fn main() {
    // A panic is a bug in buildcell; it still ends in one line and status
    // 125, never a backtrace on the user's terminal.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("buildcell: internal error: {what}{place}; please report it");
        std::process::exit(125);
    }));
    std::process::exit(buildcell::cli::main());
}
