// Runes everywhere: the app is written as Svelte 5 apps are.
export default { compilerOptions: { runes: true } };
