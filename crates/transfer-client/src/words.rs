//! The words of transfer codes: `7-violet-anchor` is a nameplate the relay
//! allocated and two words the sender picked, which never reach the relay
//! (they only key the PAKE). 256 words, so two carry 16 bits.

use rand::Rng;

const WORDS: &[&str] = &[
    "acid", "acorn", "actor", "admiral", "agent", "alarm", "album", "alpine", "amber", "anchor",
    "angle", "apple", "apron", "arch", "arena", "armor", "arrow", "aspen", "atlas", "attic",
    "audio", "autumn", "avenue", "badge", "bagel", "balloon", "bamboo", "banjo", "barn", "basil",
    "beacon", "beaver", "bell", "berry", "bicycle", "bison", "blossom", "blue", "bonsai", "bottle",
    "breeze", "brick", "bridge", "bronze", "bubble", "bucket", "bugle", "butter", "cabin",
    "cactus", "camel", "canal", "candle", "canoe", "canyon", "carbon", "cargo", "carpet", "castle",
    "cedar", "cello", "chalk", "cherry", "chess", "cider", "cinema", "circus", "citrus", "clover",
    "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "coyote", "crane", "crystal", "cube",
    "cypress", "daisy", "delta", "denim", "desert", "diamond", "dingo", "dolphin", "domino",
    "dragon", "drum", "eagle", "echo", "eclipse", "elbow", "ember", "emerald", "engine", "falcon",
    "fable", "feather", "fennel", "ferry", "fiddle", "fjord", "flame", "flute", "forest", "fossil",
    "fox", "galaxy", "garden", "garlic", "geyser", "ginger", "glacier", "globe", "granite",
    "grape", "gravel", "guitar", "hammer", "harbor", "harp", "hazel", "helmet", "heron", "hickory",
    "honey", "horizon", "husky", "iceberg", "igloo", "indigo", "iris", "island", "ivory", "jacket",
    "jade", "jaguar", "jasmine", "jelly", "jigsaw", "juniper", "kayak", "kettle", "kiwi", "koala",
    "ladder", "lagoon", "lantern", "laser", "lemon", "lilac", "lime", "linen", "lizard", "lobster",
    "locket", "lotus", "magnet", "mango", "maple", "marble", "meadow", "melon", "meteor", "mint",
    "mirror", "mocha", "monsoon", "mosaic", "moss", "nectar", "needle", "nickel", "noodle",
    "nutmeg", "oasis", "ocean", "olive", "onyx", "opal", "orbit", "orchid", "otter", "oyster",
    "paddle", "palace", "panda", "papaya", "parrot", "pebble", "pepper", "piano", "pillow", "pine",
    "planet", "plum", "polar", "pony", "prism", "puffin", "pumpkin", "quartz", "quill", "rabbit",
    "radar", "raven", "reef", "ribbon", "river", "robin", "rocket", "ruby", "saddle", "saffron",
    "salmon", "satin", "sequoia", "shadow", "silver", "sketch", "sled", "spruce", "squid", "stone",
    "sugar", "summit", "sunset", "tango", "teapot", "thistle", "thunder", "tiger", "timber",
    "topaz", "tulip", "tundra", "turtle", "umbrella", "valley", "velvet", "violet", "violin",
    "walnut", "walrus", "willow", "winter", "wizard", "yarrow", "zebra", "zephyr", "zinc",
    "zigzag", "zenith", "yodel",
];

/// Two random words joined by `-`.
pub fn pick_two() -> String {
    let mut rng = rand::rng();
    let a = WORDS[rng.random_range(0..WORDS.len())];
    let b = WORDS[rng.random_range(0..WORDS.len())];
    format!("{a}-{b}")
}
