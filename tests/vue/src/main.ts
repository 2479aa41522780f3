// The browser entry: one TokenManager for the app, given to the plugin.
import { createApp } from "vue";
import init, { TokenManager } from "tokenwarden";
import { createTokenwarden } from "tokenwarden/vue";
import App from "./App.vue";

async function main(): Promise<void> {
  await init();
  const auth = new TokenManager();
  createApp(App).use(createTokenwarden(auth)).mount("#app");
}

void main();
