"""Who is calling and what they may do: token file, OIDC access tokens, roles."""
