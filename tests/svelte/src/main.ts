// The browser entry: one TokenManager for the app, and its session for the components.
import { mount } from "svelte";
import init, { TokenManager } from "tokenwarden";
import { createAuth } from "tokenwarden/svelte";
import App from "./App.svelte";

async function main(): Promise<void> {
  await init();
  const session = createAuth(new TokenManager());
  const target = document.getElementById("app");
  if (!target) throw new Error("no #app");
  mount(App, { target, props: { session } });
}

void main();
