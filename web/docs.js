// The API reference: Swagger UI (from npm) rendering this server's own OpenAPI document.
// Requests made with "Try it out" carry the page's session cookie (sign in on the map).
window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger",
  deepLinking: true,
  tryItOutEnabled: false,
  withCredentials: true,
});
