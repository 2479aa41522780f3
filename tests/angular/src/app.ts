// The part of the app that uses tokenwarden/angular: what an Angular developer writes.
import { Component, computed, inject, signal } from "@angular/core";
import { HttpClient, HttpErrorResponse } from "@angular/common/http";
import { Router, RouterLink, RouterOutlet, type Routes } from "@angular/router";
import { authGuard, injectAuth, type AuthSignals } from "tokenwarden/angular";
import type { TokenwardenError } from "tokenwarden";

@Component({
  selector: "app-session",
  template: `
    @if (!session.isAuthenticated()) {
      <form (submit)="login($event)">
        <p data-testid="status">signed out</p>
        @if (session.endReason(); as reason) {
          <p data-testid="end-reason">{{ reason }}</p>
        }
        <input name="email" type="email" aria-label="email" />
        <input name="password" type="password" aria-label="password" />
        <button type="submit" [disabled]="session.isLoading()">Log in</button>
        @if (error(); as e) {
          <p data-testid="error">{{ e }}</p>
        }
      </form>
    } @else {
      <section>
        <p data-testid="status">signed in as {{ email() }}</p>
        <p data-testid="expires">{{ session.expiresAt() ?? "" }}</p>
        <button type="button" (click)="load()">Load profile</button>
        @if (name(); as n) {
          <p data-testid="name">{{ n }}</p>
        }
        <p data-testid="loads">{{ loads() }}</p>
        <button type="button" (click)="own()">Own header</button>
        <button type="button" (click)="other()">Other origin</button>
        <button type="button" (click)="refused()">Always refused</button>
        @if (result(); as r) {
          <p data-testid="result">{{ r }}</p>
        }
        <a routerLink="/private">Private</a>
        <button type="button" (click)="logout()">Log out</button>
      </section>
    }
  `,
  imports: [RouterLink],
})
export class Session {
  readonly session: AuthSignals = injectAuth();
  private readonly http = inject(HttpClient);
  readonly email = computed(() => this.session.claims()?.email ?? "");
  readonly name = signal<string | null>(null);
  /** How many profile loads succeeded. */
  readonly loads = signal(0);
  readonly result = signal<string | null>(null);
  readonly error = signal<string | null>(null);

  async login(e: Event): Promise<void> {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    try {
      await this.session.auth!.login({ email: String(form.get("email")), password: String(form.get("password")) });
      this.error.set(null);
    } catch (err) {
      const { name, code } = err as TokenwardenError;
      this.error.set(`${name}:${code}`);
    }
  }

  load(): void {
    this.http.get<{ name: string }>("/api/me").subscribe({
      next: (me) => {
        this.name.set(me.name);
        this.loads.update((n) => n + 1);
      },
      error: (e: HttpErrorResponse) => this.result.set(`error ${e.status}`),
    });
  }

  /** A request that brings its own Authorization: the interceptor leaves it alone. */
  own(): void {
    const headers = { Authorization: "Bearer mine", "x-test-hooks-secret": "tokenwarden-test-hooks-secret" };
    this.http.get<{ authorization: string | null }>("/test/echo", { headers }).subscribe({
      next: (r) => this.result.set(`echo ${r.authorization}`),
      error: (e: HttpErrorResponse) => this.result.set(`error ${e.status}`),
    });
  }

  /** A request the server answers 401 whatever it carries: one replay, then the caller's. */
  refused(): void {
    const headers = { "x-test-hooks-secret": "tokenwarden-test-hooks-secret" };
    this.http.get("/test/echo?status=401", { headers }).subscribe({
      next: () => this.result.set("refused ok?"),
      error: (e: HttpErrorResponse) => this.result.set(`refused ${e.status}`),
    });
  }

  /** The same server by another name: another origin, which gets no token. */
  other(): void {
    const url = `http://localhost:${location.port}/healthz`;
    this.http.get(url, { responseType: "text" }).subscribe({
      next: () => this.result.set("other ok"),
      error: (e: HttpErrorResponse) => this.result.set(`other error ${e.status}`),
    });
  }

  logout(): void {
    void this.session.auth!.logout();
  }
}

@Component({
  selector: "app-private",
  template: `<p data-testid="private">private page of {{ session.claims()?.email }}</p>`,
})
export class Private {
  readonly session: AuthSignals = injectAuth();
}

export const routes: Routes = [
  { path: "", component: Session },
  { path: "private", component: Private, canActivate: [authGuard(() => inject(Router).parseUrl("/"))] },
];

@Component({
  selector: "app-root",
  template: `<router-outlet />`,
  imports: [RouterOutlet],
})
export class App {}
