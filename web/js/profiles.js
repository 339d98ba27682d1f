// profiles: the deployment profiles (GET /api/v1/profiles), shared by the pages that show the
// landing screen, fetched at most once a minute.

import { api } from './api.js';

const TTL_MS = 60000;
let cached = null;
let at = 0;

export function profiles() {
  if (!cached || Date.now() - at > TTL_MS) {
    at = Date.now();
    cached = api('/api/v1/profiles').then((r) => r.profiles || []);
    cached.catch(() => { cached = null; });
  }
  return cached;
}
