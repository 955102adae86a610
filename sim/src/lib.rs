//! capdma simulated machine.
