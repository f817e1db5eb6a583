// Calls to the server's JSON API from the pages, with the session cookie. A refused call
// throws ApiFailure carrying the server's own error text, so every page shows it as is.

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiFailure(0, "network", "The server cannot be reached: " + err.message);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.message ? data.message : response.status + " " + response.statusText;
    throw new ApiFailure(response.status, data && data.error ? data.error : "http_error", message);
  }
  return data;
}

// The signed-in role ("admin" or "dispatcher"), or null when signed out.
export async function currentRole() {
  try {
    const who = await api("GET", "/api/v1/session");
    return who.role;
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

export async function signIn(token) {
  const who = await api("POST", "/api/v1/session", { token });
  return who.role;
}

export async function signOut() {
  await api("DELETE", "/api/v1/session");
}
