// The browser entry: one TokenManager for the app, HttpClient with the interceptor on the XHR
// backend, or on the fetch backend (withFetch()) when the page's address says ?backend=fetch.
import { bootstrapApplication } from "@angular/platform-browser";
import { provideZonelessChangeDetection } from "@angular/core";
import { provideHttpClient, withFetch, withInterceptors } from "@angular/common/http";
import { provideRouter, withHashLocation } from "@angular/router";
import init, { TokenManager } from "tokenwarden";
import { provideTokenwarden, tokenwardenInterceptor } from "tokenwarden/angular";
import { App, routes } from "./app";

async function main(): Promise<void> {
  await init();
  const auth = new TokenManager();
  const fetchBackend = new URLSearchParams(location.search).get("backend") === "fetch";
  const interceptors = withInterceptors([tokenwardenInterceptor]);
  await bootstrapApplication(App, {
    providers: [
      provideZonelessChangeDetection(),
      provideTokenwarden(auth),
      fetchBackend ? provideHttpClient(withFetch(), interceptors) : provideHttpClient(interceptors),
      provideRouter(routes, withHashLocation()),
    ],
  });
}

void main();
