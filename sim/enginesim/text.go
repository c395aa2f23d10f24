package enginesim

// words are the filler vocabulary: each token is a space and three letters,
// so a reply of n tokens has 4n characters, matching 4 characters per token.
var words = [64]string{
	"the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was", "one", "our", "out",
	"day", "get", "has", "him", "his", "how", "man", "new", "now", "old", "see", "two", "way", "who", "boy", "did",
	"its", "let", "put", "say", "she", "too", "use", "sky", "sea", "sun", "red", "big", "end", "far", "few", "got",
	"own", "run", "set", "top", "why", "yes", "yet", "ago", "air", "art", "bed", "box", "car", "cup", "dog", "eye",
}

// token is the text of output token i: the same for every request of a
// server with the same seed, so conversations replayed against it produce
// the same histories.
func token(seed uint64, i int) string {
	x := seed + uint64(i)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	return " " + words[x%uint64(len(words))]
}

// splitmix gives request ids that look like vLLM's random hex ids but are
// reproducible for a seed.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
