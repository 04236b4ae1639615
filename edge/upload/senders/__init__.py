"""How a clip leaves: one sender per upload.mode (MQTT, HTTPS), each imported only when used."""
