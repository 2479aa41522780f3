//! The migrations, embedded: `$OUT_DIR/migrations.rs` lists every file of `migrations/` and of
//! `migrations-postgres/` as sqlx's `migrate!` reads them (`<version>_<description>.sql`: the
//! version before the first `_`, the description the rest without `.sql` and with `_` as
//! spaces), each with `include_str!`, and `store::migrator` builds sqlx's `Migrator` from that
//! list. So the server needs none of sqlx's macros, which compiled sqlx, tokio, rustls and a
//! second SQLite for the compiler (about 80 s of CPU in a fresh build). A migration added
//! without a change to the code is still built in: cargo reruns this when either folder changes.
use std::path::Path;
use std::{env, fs};

/// `(version, description, absolute path)` of each migration in `dir`, by version. Anything
/// sqlx's reader would take differently is refused here, at build time.
fn migrations(dir: &str) -> Vec<(i64, String, String)> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{dir}: {e}")).path();
        // As sqlx: a link is followed, and what is not a file is not a migration.
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // As sqlx: a file not named `<version>_<description>.sql` is not a migration (a
        // README, an editor's swap file).
        let Some((version, rest)) = name.split_once('_') else {
            continue;
        };
        let Some(description) = rest.strip_suffix(".sql") else {
            continue;
        };
        if description.ends_with(".up") || description.ends_with(".down") {
            panic!("{dir}/{name}: reversible migrations are not supported");
        }
        let version: i64 = version
            .parse()
            .unwrap_or_else(|_| panic!("{dir}/{name}: no version"));
        let absolute = fs::canonicalize(&path).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
        let absolute = absolute
            .to_str()
            .unwrap_or_else(|| panic!("{dir}/{name}: a path that is not UTF-8"));
        found.push((version, description.replace('_', " "), absolute.to_owned()));
    }
    found.sort();
    for pair in found.windows(2) {
        if pair[0].0 == pair[1].0 {
            panic!("{dir}: two migrations numbered {}", pair[0].0);
        }
    }
    found
}

fn list(name: &str, dir: &str) -> String {
    let mut out =
        format!("/// The migrations of `{dir}/`, by version: (version, description, SQL).\n");
    out += &format!("pub(super) const {name}: &[(i64, &str, &str)] = &[\n");
    for (version, description, path) in migrations(dir) {
        out += &format!("    ({version}, {description:?}, include_str!({path:?})),\n");
    }
    out + "];\n"
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-postgres");
    let out = list("SQLITE", "migrations") + &list("POSTGRES", "migrations-postgres");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
