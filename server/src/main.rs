use std::process::ExitCode;

use clap::Parser;
use tokenwarden_server::config::{
    self, Cli, Command, DEMO_EMAIL, DEMO_PASSWORD, KeysCommand, UsersCommand,
};
use tokenwarden_server::kek::KeyEncryption;
use tokenwarden_server::keys::Keys;
use tokenwarden_server::store::DatabaseUrl;
use tokenwarden_server::{AppState, Settings, Store};

/// mimalloc, in its secure mode (server/Cargo.toml): glibc's malloc and free took about 7 % of
/// the server's time under load (bench section 7's profile; docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenwarden-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn run(cli: Cli) -> Result<(), String> {
    // Refused before anything is created: an unknown scheme is not a file name.
    let url = DatabaseUrl::parse(&cli.database_url()?).map_err(|e| e.to_string())?;
    // `keys` and `users` change the servers' database: one in memory keeps nothing, and one
    // that this command creates is not theirs, unless they are yet to start (said below).
    let command = !matches!(cli.command, None | Some(Command::Serve));
    let dry_run = matches!(
        cli.command,
        Some(Command::Users(UsersCommand::Import { dry_run: true, .. }))
    );
    if command && !dry_run && url.in_memory() {
        return Err(
            "a database in memory keeps nothing this command changes: give it the servers' \
             --database-url (TW_DATABASE_URL)"
                .into(),
        );
    }
    // The key-encryption key of the commands that need one, before the database is opened: a
    // missing or unreadable one otherwise left behind an empty database file it created.
    let key_encryption = match cli.command {
        None | Some(Command::Serve) | Some(Command::Keys(_)) => Some(config::key_encryption(
            cli.key_encryption_key_file.as_deref(),
            std::env::var("TW_KEY_ENCRYPTION_KEY").ok().as_deref(),
            url.as_str(),
            cli.serve.demo,
        )?),
        Some(Command::Users(_)) => None,
    };
    let created = url.sqlite_file().filter(|f| command && !f.exists());
    let store = Store::connect(url.as_str())
        .await
        .map_err(|e| format!("opening the {} database: {e}", url.kind()))?;
    let key_encryption = || key_encryption.ok_or_else(|| "no key-encryption key".to_owned());
    let result = match cli.command {
        None | Some(Command::Serve) => match key_encryption() {
            Ok(k) => serve(cli.serve, store.clone(), k).await,
            Err(e) => Err(e),
        },
        Some(Command::Keys(cmd)) => match key_encryption() {
            // The servers' key timings, checked as a server checks them (a publish delay
            // shorter than the JWKS's cache age is refused here too).
            Ok(k) => match tokenwarden_server::config::key_timings(&cli.serve) {
                Ok((grace, publish)) => keys(cmd, &store, grace, publish, k).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Some(Command::Users(UsersCommand::Add { email, name, roles })) => {
            let password = match std::env::var("TW_PASSWORD") {
                Ok(p) => p,
                Err(_) => read_hidden_line("password: ").map_err(|e| e.to_string())?,
            };
            // The rules of a password a user chooses (length, not a common one, not the address).
            let weak = match tokenwarden_server::password::check_new(&password, &email) {
                Err(tokenwarden_server::error::ApiError::WeakPassword(why)) => Some(why),
                _ => None,
            };
            match weak {
                Some(why) => Err(format!("the password: {why}")),
                None => {
                    let created = tokenwarden_server::create_user(
                        &store,
                        &email,
                        &password,
                        &name,
                        &roles,
                        now(),
                    )
                    .await?;
                    match created {
                        Some(id) => {
                            println!("created user {id} <{email}>");
                            Ok(())
                        }
                        None => Err(format!("a user with email {email} exists")),
                    }
                }
            }
        }
        Some(Command::Users(UsersCommand::Import { file, dry_run })) => {
            import(&store, &file, dry_run).await
        }
        Some(Command::Users(UsersCommand::SetClaims { email, claims })) => {
            set_claims(&store, &email, Some(&claims), None).await
        }
        Some(Command::Users(UsersCommand::SetRoles { email, roles })) => {
            set_claims(&store, &email, None, Some(&roles)).await
        }
    };
    store.close().await;
    if let (Ok(()), Some(file)) = (&result, created) {
        let what = if dry_run {
            "the check ran against an empty database"
        } else {
            "the servers see what it changed only if they use this database (--database-url)"
        };
        eprintln!(
            "tokenwarden-server: note: {} did not exist and was created for this command: {what}",
            file.display()
        );
    }
    result
}

async fn import(store: &Store, file: &std::path::Path, dry_run: bool) -> Result<(), String> {
    let report = if file.as_os_str() == "-" {
        let stdin = std::io::stdin();
        tokenwarden_server::users::import(store, stdin.lock(), dry_run, now()).await?
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let reader = std::io::BufReader::new(f);
        tokenwarden_server::users::import(store, reader, dry_run, now()).await?
    };
    for (line, why) in &report.refused {
        eprintln!("line {line}: {why}");
    }
    if !report.refused.is_empty() {
        return Err(format!(
            "{} of {} lines refused: nothing was imported",
            report.refused.len(),
            report.lines
        ));
    }
    let verb = if dry_run { "would import" } else { "imported" };
    println!(
        "{verb} {} users; {} already there, left as they are",
        report.imported, report.unchanged
    );
    Ok(())
}

async fn set_claims(
    store: &Store,
    email: &str,
    claims: Option<&str>,
    roles: Option<&[String]>,
) -> Result<(), String> {
    if !tokenwarden_server::users::set_claims(store, email, claims, roles).await? {
        return Err(format!("no user with email {email}"));
    }
    println!("updated {email}: their next refresh carries it");
    Ok(())
}

async fn keys(
    cmd: KeysCommand,
    store: &Store,
    grace: i64,
    publish: i64,
    key_encryption: KeyEncryption,
) -> Result<(), String> {
    // A new KEK: nothing read with the ring first (it would open every key), and nothing read
    // after (with the old KEK, which no longer opens them).
    if let KeysCommand::Reseal {
        new_key_encryption_key_file,
    } = &cmd
    {
        let new = tokenwarden_server::kek::LocalKek::from_file(new_key_encryption_key_file)
            .map(KeyEncryption::local)?;
        let (keys, secrets) = store
            .reseal(&key_encryption, &new)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "sealed again with the new key-encryption key: {keys} signing keys, {secrets} \
             secrets; start every instance with it"
        );
        return Ok(());
    }
    let keys = Keys::new(grace, key_encryption);
    let now = now();
    // (Not for `list`, which only reads: on a database without a signing key the re-read makes
    // one, sealed by whatever key-encryption key the command was given.)
    if !matches!(cmd, KeysCommand::List) {
        keys.reload(store, now).await.map_err(|e| e.to_string())?;
    }
    match cmd {
        KeysCommand::List => {
            println!("{:<44} {:<22} created", "kid", "state");
            let rows = store.keys().await.map_err(|e| e.to_string())?;
            let states = tokenwarden_server::keys::key_states(&rows, now, grace);
            for (k, state) in rows.iter().zip(states) {
                use tokenwarden_server::keys::KeyState;
                let state = match state {
                    KeyState::Pending { signs_from } => {
                        format!("pending (signs in {} s)", signs_from - now)
                    }
                    KeyState::Signing => "signing".into(),
                    KeyState::Retired { .. } => "retired".into(),
                    KeyState::Expired => "expired".into(),
                    KeyState::Revoked => "revoked".into(),
                };
                println!("{:<44} {:<22} {}", k.kid, state, k.created_at);
            }
        }
        KeysCommand::Rotate => {
            let kid = keys
                .add_next(store, now, publish)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "new key {kid}, published now in the JWKS, signs in {publish} s; the current key \
                 verifies for {grace} s after that"
            );
            reread_after(&keys, store, now).await;
        }
        KeysCommand::Revoke { kid } => {
            if !store
                .revoke_key(&kid, now)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no live key with kid {kid}"));
            }
            println!("revoked {kid}: tokens it signed are refused; clients recover by refreshing");
            // A new signing key if that one signed: made by this re-read, or by every
            // instance's own.
            reread_after(&keys, store, now).await;
        }
        // (Carried out above, before the ring is read.)
        KeysCommand::Reseal { .. } => {}
    }
    Ok(())
}

/// The ring re-read after a `keys` change that is committed: a failure is said, and the command
/// still succeeds (run again, it would rotate twice, or find no live key to revoke). Every
/// instance re-reads the ring on its own, and makes a signing key if none is left.
async fn reread_after(keys: &Keys, store: &Store, now: i64) {
    if let Err(e) = keys.reload(store, now).await {
        eprintln!(
            "tokenwarden-server: the change above is committed, but re-reading the key ring \
             after it failed: {e}. Do not run the command again; `keys list` shows the ring, and \
             every instance re-reads it on its own."
        );
    }
}

async fn serve(
    args: tokenwarden_server::config::ServeArgs,
    store: Store,
    key_encryption: KeyEncryption,
) -> Result<(), String> {
    let settings = Settings::from_args(&args, key_encryption)?;
    let state = AppState::new(settings.clone(), store)
        .await
        .map_err(|e| format!("starting: {e}"))?;
    if !settings.demo
        && state
            .store
            .delete_user_by_email(DEMO_EMAIL, state.now())
            .await
            .map_err(|e| e.to_string())?
    {
        // Its password is published: it must not outlive --demo.
        tracing::warn!("deleted the demo user (and its sessions): the server runs without --demo");
    }
    if settings.demo {
        let created = tokenwarden_server::create_user(
            &state.store,
            DEMO_EMAIL,
            DEMO_PASSWORD,
            "Demo User",
            &["user".to_owned()],
            state.now(),
        )
        .await?;
        if created.is_some() {
            state
                .store
                .set_email_verified(DEMO_EMAIL, state.now())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!("seeded the demo user");
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokenwarden_server::serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("binding {}: {e}", args.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("tokenwarden-server listening on {scheme}://{addr}");
    if settings.public_origins.is_empty() && !addr.ip().is_loopback() {
        eprintln!(
            "note: without --public-origin, DPoP proofs are accepted only for loopback hosts \
             (localhost, 127.0.0.1, [::1]); set --public-origin to the origin clients use"
        );
    }
    if settings.demo {
        println!("demo user: {DEMO_EMAIL} / {DEMO_PASSWORD}");
        println!("open {scheme}://{addr}/ in a browser");
    }
    match (state.codes.enabled().is_ok(), &settings.otp.smtp_url) {
        (true, Some(_)) => println!("sign-in codes are sent over SMTP (--smtp-url)"),
        (true, None) => println!(
            "sign-in codes go to the demo mailbox (no --smtp-url): printed here and shown on the page"
        ),
        (false, _) => tracing::info!("sign-in by emailed code is off (no --smtp-url)"),
    }
    if settings.test_hooks {
        println!(
            "test hooks enabled at /test/* (header X-Test-Hooks-Secret: {})",
            settings.test_hooks_secret
        );
    }
    let maintenance = tokenwarden_server::spawn_maintenance(state.clone());
    let fleet = tokenwarden_server::fleet::spawn(state.fleet.clone());
    let app = tokenwarden_server::router(&state);
    let (limits, proxies) = (settings.connections, settings.proxies.clone());
    match tls {
        Some(tls) => {
            let stop = shutdown_signal();
            tokenwarden_server::serve::serve_tls(listener, tls, app, limits, proxies, stop).await
        }
        None => {
            tokenwarden_server::serve::serve(listener, app, limits, proxies, shutdown_signal())
                .await
        }
    }
    maintenance.abort();
    if let Some(fleet) = fleet {
        fleet.abort();
    }
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A line from stdin after `prompt`; from a terminal, not echoed (the password typed stays off
/// the screen and its scrollback), the terminal's echo restored afterwards. Piped input is read
/// as it is.
fn read_hidden_line(prompt: &str) -> std::io::Result<String> {
    #[cfg(unix)]
    let echo_off = EchoOff::new();
    eprint!("{prompt}");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    #[cfg(unix)]
    drop(echo_off);
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The echo of the terminal on stdin turned off while it lives (with `ECHONL`: the newline is
/// still shown); nothing when stdin is no terminal.
#[cfg(unix)]
struct EchoOff(Option<libc::termios>);

#[cfg(unix)]
impl EchoOff {
    fn new() -> Self {
        // SAFETY: `isatty`, `tcgetattr` and `tcsetattr` on fd 0 with a `termios` we own;
        // `tcgetattr` fills the zeroed struct before it is read or written back.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            term.c_lflag |= libc::ECHONL;
            // Ctrl-C at the prompt: the echo back on before the process ends.
            let _ = SAVED_TERMINAL.set(saved);
            let handler = restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(libc::SIGINT, handler);
            if libc::tcsetattr(0, libc::TCSANOW, &term) != 0 {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

/// The terminal's settings before [`EchoOff`], for [`restore_and_exit`].
#[cfg(unix)]
static SAVED_TERMINAL: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

/// SIGINT while the echo is off: the terminal as it was, then the exit a Ctrl-C makes (130).
#[cfg(unix)]
extern "C" fn restore_and_exit(_: libc::c_int) {
    // SAFETY: `tcsetattr` and `_exit` are async-signal-safe; the settings were set before the
    // handler was installed and are never changed after.
    unsafe {
        if let Some(saved) = SAVED_TERMINAL.get() {
            libc::tcsetattr(0, libc::TCSANOW, saved);
        }
        libc::_exit(130);
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: as in `new`: fd 0 and the settings `tcgetattr` returned; SIGINT's default
            // action back.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
            }
        }
    }
}
