// tokenwarden/vue in a Vue 3 app (tests/vue: Vite 7, vue-tsc strict, the packed tarball): the
// plugin and useAuth()'s refs, through the story of spa.ts.
import { VUE } from "./playwright.config";
import { spaStory } from "./spa";

spaStory("Vue", VUE);
