// npm `slip39` ships no types: the one call the portal makes.
declare module 'slip39' {
  const slip39: {
    recoverSecret(mnemonics: string[], passphrase: string): number[]
  }
  export default slip39
}
