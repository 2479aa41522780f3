// tokenwarden/svelte in a Svelte 5 app (tests/svelte: runes, Vite 7, svelte-check strict, the
// packed tarball): createAuth()'s runes-reactive fields and its store, through the story of
// spa.ts.
import { SVELTE } from "./playwright.config";
import { spaStory } from "./spa";

spaStory("Svelte", SVELTE);
