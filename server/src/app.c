/* app: wiring (in progress). */
