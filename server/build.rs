//! The migrations are embedded by `sqlx::migrate!`, which cargo does not know reads them: a
//! migration added without a change to the code would otherwise be left out of the build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-postgres");
}
